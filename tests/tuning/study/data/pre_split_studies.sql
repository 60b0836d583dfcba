BEGIN TRANSACTION;
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO "alembic_version" VALUES('v3.2.0.a');
CREATE TABLE studies (
	study_id INTEGER NOT NULL, 
	study_name VARCHAR(512) NOT NULL, 
	PRIMARY KEY (study_id)
);
INSERT INTO "studies" VALUES(1,'old-tpe');
INSERT INTO "studies" VALUES(2,'old-greedy_pipeline');
INSERT INTO "studies" VALUES(3,'old-hiermab_ts');
INSERT INTO "studies" VALUES(4,'old-grid_native');
CREATE TABLE study_directions (
	study_direction_id INTEGER NOT NULL, 
	direction VARCHAR(8) NOT NULL, 
	study_id INTEGER NOT NULL, 
	objective INTEGER NOT NULL, 
	PRIMARY KEY (study_direction_id), 
	UNIQUE (study_id, objective), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
INSERT INTO "study_directions" VALUES(1,'MAXIMIZE',1,0);
INSERT INTO "study_directions" VALUES(2,'MAXIMIZE',2,0);
INSERT INTO "study_directions" VALUES(3,'MAXIMIZE',3,0);
INSERT INTO "study_directions" VALUES(4,'MAXIMIZE',4,0);
CREATE TABLE study_system_attributes (
	study_system_attribute_id INTEGER NOT NULL, 
	study_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (study_system_attribute_id), 
	UNIQUE (study_id, "key"), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE TABLE study_user_attributes (
	study_user_attribute_id INTEGER NOT NULL, 
	study_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (study_user_attribute_id), 
	UNIQUE (study_id, "key"), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
INSERT INTO "study_user_attributes" VALUES(1,1,'ragopt_signature','"b4cbd1f4e8b560bd"');
INSERT INTO "study_user_attributes" VALUES(2,1,'ragopt_config','{"dataset": "adi", "holdout": {"fraction": 0.3, "seed": 0}, "objective": {"directions": ["maximize"], "metrics": ["ndcg@10"]}, "pipeline": {"stages": [{"b": 0.4, "backend": "bm25s", "delta": 0.5, "k1": 0.9, "lower": true, "method": "lucene", "stemmer": "english", "stopwords": "en", "threads": 1, "top_k": 1000, "type": "bm25", "with_title": true}], "type": "pipeline"}, "space": [{"group": "bm25", "high": 2.0, "levels": 4, "low": 0.5, "name": "k1", "path": "stages.0.k1", "type": "float"}, {"group": "bm25", "high": 1.0, "levels": 3, "low": 0.2, "name": "b", "path": "stages.0.b", "type": "float"}, {"choices": ["english", null], "name": "stemmer", "path": "stages.0.stemmer"}], "split": "test", "tuner": "tpe"}');
INSERT INTO "study_user_attributes" VALUES(3,2,'ragopt_signature','"b4cbd1f4e8b560bd"');
INSERT INTO "study_user_attributes" VALUES(4,2,'ragopt_config','{"dataset": "adi", "holdout": {"fraction": 0.3, "seed": 0}, "objective": {"directions": ["maximize"], "metrics": ["ndcg@10"]}, "pipeline": {"stages": [{"b": 0.4, "backend": "bm25s", "delta": 0.5, "k1": 0.9, "lower": true, "method": "lucene", "stemmer": "english", "stopwords": "en", "threads": 1, "top_k": 1000, "type": "bm25", "with_title": true}], "type": "pipeline"}, "space": [{"group": "bm25", "high": 2.0, "levels": 4, "low": 0.5, "name": "k1", "path": "stages.0.k1", "type": "float"}, {"group": "bm25", "high": 1.0, "levels": 3, "low": 0.2, "name": "b", "path": "stages.0.b", "type": "float"}, {"choices": ["english", null], "name": "stemmer", "path": "stages.0.stemmer"}], "split": "test", "tuner": "greedy_pipeline"}');
INSERT INTO "study_user_attributes" VALUES(5,3,'ragopt_signature','"b4cbd1f4e8b560bd"');
INSERT INTO "study_user_attributes" VALUES(6,3,'ragopt_config','{"dataset": "adi", "holdout": {"fraction": 0.3, "seed": 0}, "objective": {"directions": ["maximize"], "metrics": ["ndcg@10"]}, "pipeline": {"stages": [{"b": 0.4, "backend": "bm25s", "delta": 0.5, "k1": 0.9, "lower": true, "method": "lucene", "stemmer": "english", "stopwords": "en", "threads": 1, "top_k": 1000, "type": "bm25", "with_title": true}], "type": "pipeline"}, "space": [{"group": "bm25", "high": 2.0, "levels": 4, "low": 0.5, "name": "k1", "path": "stages.0.k1", "type": "float"}, {"group": "bm25", "high": 1.0, "levels": 3, "low": 0.2, "name": "b", "path": "stages.0.b", "type": "float"}, {"choices": ["english", null], "name": "stemmer", "path": "stages.0.stemmer"}], "split": "test", "tuner": "hiermab_ts"}');
INSERT INTO "study_user_attributes" VALUES(7,4,'ragopt_signature','"b4cbd1f4e8b560bd"');
INSERT INTO "study_user_attributes" VALUES(8,4,'ragopt_config','{"dataset": "adi", "holdout": {"fraction": 0.3, "seed": 0}, "objective": {"directions": ["maximize"], "metrics": ["ndcg@10"]}, "pipeline": {"stages": [{"b": 0.4, "backend": "bm25s", "delta": 0.5, "k1": 0.9, "lower": true, "method": "lucene", "stemmer": "english", "stopwords": "en", "threads": 1, "top_k": 1000, "type": "bm25", "with_title": true}], "type": "pipeline"}, "space": [{"group": "bm25", "high": 2.0, "levels": 4, "low": 0.5, "name": "k1", "path": "stages.0.k1", "type": "float"}, {"group": "bm25", "high": 1.0, "levels": 3, "low": 0.2, "name": "b", "path": "stages.0.b", "type": "float"}, {"choices": ["english", null], "name": "stemmer", "path": "stages.0.stemmer"}], "split": "test", "tuner": "grid_native"}');
CREATE TABLE trial_heartbeats (
	trial_heartbeat_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	heartbeat DATETIME NOT NULL, 
	PRIMARY KEY (trial_heartbeat_id), 
	UNIQUE (trial_id), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_heartbeats" VALUES(1,1,'2026-12-02 06:08:09');
INSERT INTO "trial_heartbeats" VALUES(2,2,'2026-12-02 06:08:10');
INSERT INTO "trial_heartbeats" VALUES(3,3,'2026-12-02 06:08:10');
INSERT INTO "trial_heartbeats" VALUES(4,4,'2026-12-02 06:08:10');
INSERT INTO "trial_heartbeats" VALUES(5,5,'2026-12-02 06:08:10');
INSERT INTO "trial_heartbeats" VALUES(6,6,'2026-12-02 06:08:10');
INSERT INTO "trial_heartbeats" VALUES(7,7,'2026-12-02 06:08:10');
INSERT INTO "trial_heartbeats" VALUES(8,8,'2026-12-02 06:08:10');
INSERT INTO "trial_heartbeats" VALUES(9,9,'2026-12-02 06:08:10');
INSERT INTO "trial_heartbeats" VALUES(10,10,'2026-12-02 06:08:11');
INSERT INTO "trial_heartbeats" VALUES(11,11,'2026-12-02 06:08:11');
INSERT INTO "trial_heartbeats" VALUES(12,12,'2026-12-02 06:08:11');
CREATE TABLE trial_intermediate_values (
	trial_intermediate_value_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	step INTEGER NOT NULL, 
	intermediate_value FLOAT, 
	intermediate_value_type VARCHAR(7) NOT NULL, 
	PRIMARY KEY (trial_intermediate_value_id), 
	UNIQUE (trial_id, step), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE trial_params (
	param_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	param_name VARCHAR(512), 
	param_value FLOAT, 
	distribution_json TEXT, 
	PRIMARY KEY (param_id), 
	UNIQUE (trial_id, param_name), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_params" VALUES(1,1,'k1',0.9,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.5, "high": 2.0, "log": false}}');
INSERT INTO "trial_params" VALUES(2,1,'b',0.4,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.2, "high": 1.0, "log": false}}');
INSERT INTO "trial_params" VALUES(3,1,'stemmer',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["english", "null"]}}');
INSERT INTO "trial_params" VALUES(4,2,'k1',1.32619685386186336728e+00,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.5, "high": 2.0, "log": false}}');
INSERT INTO "trial_params" VALUES(5,2,'b',7.66518258094483817544e-01,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.2, "high": 1.0, "log": false}}');
INSERT INTO "trial_params" VALUES(6,2,'stemmer',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["english", "null"]}}');
INSERT INTO "trial_params" VALUES(7,3,'k1',1.83942043152148215767e+00,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.5, "high": 2.0, "log": false}}');
INSERT INTO "trial_params" VALUES(8,3,'b',9.17034471146750407299e-01,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.2, "high": 1.0, "log": false}}');
INSERT INTO "trial_params" VALUES(9,3,'stemmer',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["english", "null"]}}');
INSERT INTO "trial_params" VALUES(10,4,'k1',0.9,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.5, "high": 2.0, "log": false}}');
INSERT INTO "trial_params" VALUES(11,4,'b',0.4,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.2, "high": 1.0, "log": false}}');
INSERT INTO "trial_params" VALUES(12,4,'stemmer',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["english", "null"]}}');
INSERT INTO "trial_params" VALUES(13,5,'k1',0.5,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.5, "high": 2.0, "log": false}}');
INSERT INTO "trial_params" VALUES(14,5,'b',0.4,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.2, "high": 1.0, "log": false}}');
INSERT INTO "trial_params" VALUES(15,5,'stemmer',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["english", "null"]}}');
INSERT INTO "trial_params" VALUES(16,6,'k1',1.0,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.5, "high": 2.0, "log": false}}');
INSERT INTO "trial_params" VALUES(17,6,'b',0.4,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.2, "high": 1.0, "log": false}}');
INSERT INTO "trial_params" VALUES(18,6,'stemmer',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["english", "null"]}}');
INSERT INTO "trial_params" VALUES(19,7,'k1',0.9,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.5, "high": 2.0, "log": false}}');
INSERT INTO "trial_params" VALUES(20,7,'b',0.4,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.2, "high": 1.0, "log": false}}');
INSERT INTO "trial_params" VALUES(21,7,'stemmer',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["english", "null"]}}');
INSERT INTO "trial_params" VALUES(22,8,'k1',2.0,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.5, "high": 2.0, "log": false}}');
INSERT INTO "trial_params" VALUES(23,8,'b',1.0,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.2, "high": 1.0, "log": false}}');
INSERT INTO "trial_params" VALUES(24,8,'stemmer',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["english", "null"]}}');
INSERT INTO "trial_params" VALUES(25,9,'k1',2.0,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.5, "high": 2.0, "log": false}}');
INSERT INTO "trial_params" VALUES(26,9,'b',1.0,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.2, "high": 1.0, "log": false}}');
INSERT INTO "trial_params" VALUES(27,9,'stemmer',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["english", "null"]}}');
INSERT INTO "trial_params" VALUES(28,10,'k1',1.5,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.5, "high": 2.0, "log": false}}');
INSERT INTO "trial_params" VALUES(29,10,'b',0.2,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.2, "high": 1.0, "log": false}}');
INSERT INTO "trial_params" VALUES(30,10,'stemmer',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["english", "null"]}}');
INSERT INTO "trial_params" VALUES(31,11,'k1',0.5,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.5, "high": 2.0, "log": false}}');
INSERT INTO "trial_params" VALUES(32,11,'b',0.2,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.2, "high": 1.0, "log": false}}');
INSERT INTO "trial_params" VALUES(33,11,'stemmer',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["english", "null"]}}');
INSERT INTO "trial_params" VALUES(34,12,'k1',2.0,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.5, "high": 2.0, "log": false}}');
INSERT INTO "trial_params" VALUES(35,12,'b',1.0,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.2, "high": 1.0, "log": false}}');
INSERT INTO "trial_params" VALUES(36,12,'stemmer',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["english", "null"]}}');
CREATE TABLE trial_system_attributes (
	trial_system_attribute_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (trial_system_attribute_id), 
	UNIQUE (trial_id, "key"), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_system_attributes" VALUES(1,1,'fixed_params','{"k1": 0.9, "b": 0.4, "stemmer": "english"}');
CREATE TABLE trial_user_attributes (
	trial_user_attribute_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (trial_user_attribute_id), 
	UNIQUE (trial_id, "key"), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_user_attributes" VALUES(1,1,'pipeline','"{\"stages\":[{\"b\":0.4,\"backend\":\"bm25s\",\"delta\":0.5,\"k1\":0.9,\"lower\":true,\"method\":\"lucene\",\"stemmer\":\"english\",\"stopwords\":\"en\",\"threads\":1,\"top_k\":1000,\"type\":\"bm25\",\"with_title\":true}],\"type\":\"pipeline\"}"');
INSERT INTO "trial_user_attributes" VALUES(2,1,'metrics','{"ndcg@10": 0.45307904801289295}');
INSERT INTO "trial_user_attributes" VALUES(3,1,'costs','{"bm25_queries": 25}');
INSERT INTO "trial_user_attributes" VALUES(4,1,'stage_seconds','{"0:bm25": 0.0046}');
INSERT INTO "trial_user_attributes" VALUES(5,1,'latency_ms','0.189');
INSERT INTO "trial_user_attributes" VALUES(6,1,'fit_s','0.1476');
INSERT INTO "trial_user_attributes" VALUES(7,1,'search_s','0.0047');
INSERT INTO "trial_user_attributes" VALUES(8,1,'cache','{"cache_hits": 0, "cache_misses": 1, "cache_compute_s": 0.0027}');
INSERT INTO "trial_user_attributes" VALUES(9,2,'pipeline','"{\"stages\":[{\"b\":0.7665182581,\"backend\":\"bm25s\",\"delta\":0.5,\"k1\":1.3261968539,\"lower\":true,\"method\":\"lucene\",\"stemmer\":null,\"stopwords\":\"en\",\"threads\":1,\"top_k\":1000,\"type\":\"bm25\",\"with_title\":true}],\"type\":\"pipeline\"}"');
INSERT INTO "trial_user_attributes" VALUES(10,2,'metrics','{"ndcg@10": 0.44173667209496054}');
INSERT INTO "trial_user_attributes" VALUES(11,2,'costs','{"bm25_queries": 25}');
INSERT INTO "trial_user_attributes" VALUES(12,2,'stage_seconds','{"0:bm25": 0.0042}');
INSERT INTO "trial_user_attributes" VALUES(13,2,'latency_ms','0.1718');
INSERT INTO "trial_user_attributes" VALUES(14,2,'fit_s','0.012');
INSERT INTO "trial_user_attributes" VALUES(15,2,'search_s','0.0043');
INSERT INTO "trial_user_attributes" VALUES(16,2,'cache','{"cache_hits": 0, "cache_misses": 2, "cache_compute_s": 0.005}');
INSERT INTO "trial_user_attributes" VALUES(17,3,'pipeline','"{\"stages\":[{\"b\":0.9170344711,\"backend\":\"bm25s\",\"delta\":0.5,\"k1\":1.8394204315,\"lower\":true,\"method\":\"lucene\",\"stemmer\":null,\"stopwords\":\"en\",\"threads\":1,\"top_k\":1000,\"type\":\"bm25\",\"with_title\":true}],\"type\":\"pipeline\"}"');
INSERT INTO "trial_user_attributes" VALUES(18,3,'metrics','{"ndcg@10": 0.46160988930325786}');
INSERT INTO "trial_user_attributes" VALUES(19,3,'costs','{"bm25_queries": 25}');
INSERT INTO "trial_user_attributes" VALUES(20,3,'stage_seconds','{"0:bm25": 0.0039}');
INSERT INTO "trial_user_attributes" VALUES(21,3,'latency_ms','0.1569');
INSERT INTO "trial_user_attributes" VALUES(22,3,'fit_s','0.0102');
INSERT INTO "trial_user_attributes" VALUES(23,3,'search_s','0.0039');
INSERT INTO "trial_user_attributes" VALUES(24,3,'cache','{"cache_hits": 0, "cache_misses": 3, "cache_compute_s": 0.0069}');
INSERT INTO "trial_user_attributes" VALUES(25,4,'pipeline','"{\"stages\":[{\"b\":0.4,\"backend\":\"bm25s\",\"delta\":0.5,\"k1\":0.9,\"lower\":true,\"method\":\"lucene\",\"stemmer\":\"english\",\"stopwords\":\"en\",\"threads\":1,\"top_k\":1000,\"type\":\"bm25\",\"with_title\":true}],\"type\":\"pipeline\"}"');
INSERT INTO "trial_user_attributes" VALUES(26,4,'metrics','{"ndcg@10": 0.45307904801289295}');
INSERT INTO "trial_user_attributes" VALUES(27,4,'costs','{"cache_hits:bm25": 1}');
INSERT INTO "trial_user_attributes" VALUES(28,4,'stage_seconds','{"0:bm25": 0.0007}');
INSERT INTO "trial_user_attributes" VALUES(29,4,'latency_ms','0.029');
INSERT INTO "trial_user_attributes" VALUES(30,4,'fit_s','0.0017');
INSERT INTO "trial_user_attributes" VALUES(31,4,'search_s','0.0007');
INSERT INTO "trial_user_attributes" VALUES(32,4,'cache','{"cache_hits": 1, "cache_misses": 0, "cache_compute_s": 0.0}');
INSERT INTO "trial_user_attributes" VALUES(33,5,'pipeline','"{\"stages\":[{\"b\":0.4,\"backend\":\"bm25s\",\"delta\":0.5,\"k1\":0.5,\"lower\":true,\"method\":\"lucene\",\"stemmer\":\"english\",\"stopwords\":\"en\",\"threads\":1,\"top_k\":1000,\"type\":\"bm25\",\"with_title\":true}],\"type\":\"pipeline\"}"');
INSERT INTO "trial_user_attributes" VALUES(34,5,'metrics','{"ndcg@10": 0.4255824845267152}');
INSERT INTO "trial_user_attributes" VALUES(35,5,'costs','{"bm25_queries": 25}');
INSERT INTO "trial_user_attributes" VALUES(36,5,'stage_seconds','{"0:bm25": 0.0037}');
INSERT INTO "trial_user_attributes" VALUES(37,5,'latency_ms','0.1489');
INSERT INTO "trial_user_attributes" VALUES(38,5,'fit_s','0.0082');
INSERT INTO "trial_user_attributes" VALUES(39,5,'search_s','0.0037');
INSERT INTO "trial_user_attributes" VALUES(40,5,'cache','{"cache_hits": 1, "cache_misses": 1, "cache_compute_s": 0.002}');
INSERT INTO "trial_user_attributes" VALUES(41,6,'pipeline','"{\"stages\":[{\"b\":0.4,\"backend\":\"bm25s\",\"delta\":0.5,\"k1\":1.0,\"lower\":true,\"method\":\"lucene\",\"stemmer\":\"english\",\"stopwords\":\"en\",\"threads\":1,\"top_k\":1000,\"type\":\"bm25\",\"with_title\":true}],\"type\":\"pipeline\"}"');
INSERT INTO "trial_user_attributes" VALUES(42,6,'metrics','{"ndcg@10": 0.45415524974798743}');
INSERT INTO "trial_user_attributes" VALUES(43,6,'costs','{"bm25_queries": 25}');
INSERT INTO "trial_user_attributes" VALUES(44,6,'stage_seconds','{"0:bm25": 0.0029}');
INSERT INTO "trial_user_attributes" VALUES(45,6,'latency_ms','0.1181');
INSERT INTO "trial_user_attributes" VALUES(46,6,'fit_s','0.0078');
INSERT INTO "trial_user_attributes" VALUES(47,6,'search_s','0.003');
INSERT INTO "trial_user_attributes" VALUES(48,6,'cache','{"cache_hits": 1, "cache_misses": 2, "cache_compute_s": 0.0036}');
INSERT INTO "trial_user_attributes" VALUES(49,7,'pipeline','"{\"stages\":[{\"b\":0.4,\"backend\":\"bm25s\",\"delta\":0.5,\"k1\":0.9,\"lower\":true,\"method\":\"lucene\",\"stemmer\":\"english\",\"stopwords\":\"en\",\"threads\":1,\"top_k\":1000,\"type\":\"bm25\",\"with_title\":true}],\"type\":\"pipeline\"}"');
INSERT INTO "trial_user_attributes" VALUES(50,7,'metrics','{"ndcg@10": 0.45307904801289295}');
INSERT INTO "trial_user_attributes" VALUES(51,7,'costs','{"cache_hits:bm25": 1}');
INSERT INTO "trial_user_attributes" VALUES(52,7,'stage_seconds','{"0:bm25": 0.0008}');
INSERT INTO "trial_user_attributes" VALUES(53,7,'latency_ms','0.0337');
INSERT INTO "trial_user_attributes" VALUES(54,7,'fit_s','0.0018');
INSERT INTO "trial_user_attributes" VALUES(55,7,'search_s','0.0008');
INSERT INTO "trial_user_attributes" VALUES(56,7,'cache','{"cache_hits": 1, "cache_misses": 0, "cache_compute_s": 0.0}');
INSERT INTO "trial_user_attributes" VALUES(57,8,'pipeline','"{\"stages\":[{\"b\":1.0,\"backend\":\"bm25s\",\"delta\":0.5,\"k1\":2.0,\"lower\":true,\"method\":\"lucene\",\"stemmer\":\"english\",\"stopwords\":\"en\",\"threads\":1,\"top_k\":1000,\"type\":\"bm25\",\"with_title\":true}],\"type\":\"pipeline\"}"');
INSERT INTO "trial_user_attributes" VALUES(58,8,'metrics','{"ndcg@10": 0.4832232698399263}');
INSERT INTO "trial_user_attributes" VALUES(59,8,'costs','{"bm25_queries": 25}');
INSERT INTO "trial_user_attributes" VALUES(60,8,'stage_seconds','{"0:bm25": 0.0071}');
INSERT INTO "trial_user_attributes" VALUES(61,8,'latency_ms','0.2881');
INSERT INTO "trial_user_attributes" VALUES(62,8,'fit_s','0.0082');
INSERT INTO "trial_user_attributes" VALUES(63,8,'search_s','0.0072');
INSERT INTO "trial_user_attributes" VALUES(64,8,'cache','{"cache_hits": 1, "cache_misses": 1, "cache_compute_s": 0.003}');
INSERT INTO "trial_user_attributes" VALUES(65,9,'pipeline','"{\"stages\":[{\"b\":1.0,\"backend\":\"bm25s\",\"delta\":0.5,\"k1\":2.0,\"lower\":true,\"method\":\"lucene\",\"stemmer\":null,\"stopwords\":\"en\",\"threads\":1,\"top_k\":1000,\"type\":\"bm25\",\"with_title\":true}],\"type\":\"pipeline\"}"');
INSERT INTO "trial_user_attributes" VALUES(66,9,'metrics','{"ndcg@10": 0.46332025776868385}');
INSERT INTO "trial_user_attributes" VALUES(67,9,'costs','{"bm25_queries": 25}');
INSERT INTO "trial_user_attributes" VALUES(68,9,'stage_seconds','{"0:bm25": 0.0031}');
INSERT INTO "trial_user_attributes" VALUES(69,9,'latency_ms','0.1265');
INSERT INTO "trial_user_attributes" VALUES(70,9,'fit_s','0.0106');
INSERT INTO "trial_user_attributes" VALUES(71,9,'search_s','0.0032');
INSERT INTO "trial_user_attributes" VALUES(72,9,'cache','{"cache_hits": 1, "cache_misses": 2, "cache_compute_s": 0.0046}');
INSERT INTO "trial_user_attributes" VALUES(73,10,'pipeline','"{\"stages\":[{\"b\":0.2,\"backend\":\"bm25s\",\"delta\":0.5,\"k1\":1.5,\"lower\":true,\"method\":\"lucene\",\"stemmer\":null,\"stopwords\":\"en\",\"threads\":1,\"top_k\":1000,\"type\":\"bm25\",\"with_title\":true}],\"type\":\"pipeline\"}"');
INSERT INTO "trial_user_attributes" VALUES(74,10,'metrics','{"ndcg@10": 0.4391319873272117}');
INSERT INTO "trial_user_attributes" VALUES(75,10,'costs','{"bm25_queries": 25}');
INSERT INTO "trial_user_attributes" VALUES(76,10,'stage_seconds','{"0:bm25": 0.004}');
INSERT INTO "trial_user_attributes" VALUES(77,10,'latency_ms','0.1631');
INSERT INTO "trial_user_attributes" VALUES(78,10,'fit_s','0.0102');
INSERT INTO "trial_user_attributes" VALUES(79,10,'search_s','0.0041');
INSERT INTO "trial_user_attributes" VALUES(80,10,'cache','{"cache_hits": 0, "cache_misses": 1, "cache_compute_s": 0.0021}');
INSERT INTO "trial_user_attributes" VALUES(81,11,'pipeline','"{\"stages\":[{\"b\":0.2,\"backend\":\"bm25s\",\"delta\":0.5,\"k1\":0.5,\"lower\":true,\"method\":\"lucene\",\"stemmer\":\"english\",\"stopwords\":\"en\",\"threads\":1,\"top_k\":1000,\"type\":\"bm25\",\"with_title\":true}],\"type\":\"pipeline\"}"');
INSERT INTO "trial_user_attributes" VALUES(82,11,'metrics','{"ndcg@10": 0.42511903411932045}');
INSERT INTO "trial_user_attributes" VALUES(83,11,'costs','{"bm25_queries": 25}');
INSERT INTO "trial_user_attributes" VALUES(84,11,'stage_seconds','{"0:bm25": 0.0039}');
INSERT INTO "trial_user_attributes" VALUES(85,11,'latency_ms','0.1586');
INSERT INTO "trial_user_attributes" VALUES(86,11,'fit_s','0.0121');
INSERT INTO "trial_user_attributes" VALUES(87,11,'search_s','0.004');
INSERT INTO "trial_user_attributes" VALUES(88,11,'cache','{"cache_hits": 0, "cache_misses": 2, "cache_compute_s": 0.0044}');
INSERT INTO "trial_user_attributes" VALUES(89,12,'pipeline','"{\"stages\":[{\"b\":1.0,\"backend\":\"bm25s\",\"delta\":0.5,\"k1\":2.0,\"lower\":true,\"method\":\"lucene\",\"stemmer\":null,\"stopwords\":\"en\",\"threads\":1,\"top_k\":1000,\"type\":\"bm25\",\"with_title\":true}],\"type\":\"pipeline\"}"');
INSERT INTO "trial_user_attributes" VALUES(90,12,'metrics','{"ndcg@10": 0.46332025776868385}');
INSERT INTO "trial_user_attributes" VALUES(91,12,'costs','{"cache_hits:bm25": 1}');
INSERT INTO "trial_user_attributes" VALUES(92,12,'stage_seconds','{"0:bm25": 0.0008}');
INSERT INTO "trial_user_attributes" VALUES(93,12,'latency_ms','0.0364');
INSERT INTO "trial_user_attributes" VALUES(94,12,'fit_s','0.0023');
INSERT INTO "trial_user_attributes" VALUES(95,12,'search_s','0.0009');
INSERT INTO "trial_user_attributes" VALUES(96,12,'cache','{"cache_hits": 1, "cache_misses": 2, "cache_compute_s": 0.0044}');
CREATE TABLE trial_values (
	trial_value_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	objective INTEGER NOT NULL, 
	value FLOAT, 
	value_type VARCHAR(7) NOT NULL, 
	PRIMARY KEY (trial_value_id), 
	UNIQUE (trial_id, objective), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_values" VALUES(1,1,0,4.53079048012892948715e-01,'FINITE');
INSERT INTO "trial_values" VALUES(2,2,0,4.41736672094960536316e-01,'FINITE');
INSERT INTO "trial_values" VALUES(3,3,0,4.61609889303257858728e-01,'FINITE');
INSERT INTO "trial_values" VALUES(4,4,0,4.53079048012892948715e-01,'FINITE');
INSERT INTO "trial_values" VALUES(5,5,0,4.25582484526715210115e-01,'FINITE');
INSERT INTO "trial_values" VALUES(6,6,0,4.54155249747987432851e-01,'FINITE');
INSERT INTO "trial_values" VALUES(7,7,0,4.53079048012892948715e-01,'FINITE');
INSERT INTO "trial_values" VALUES(8,8,0,4.83223269839926306001e-01,'FINITE');
INSERT INTO "trial_values" VALUES(9,9,0,4.63320257768683851917e-01,'FINITE');
INSERT INTO "trial_values" VALUES(10,10,0,4.39131987327211703586e-01,'FINITE');
INSERT INTO "trial_values" VALUES(11,11,0,4.2511903411932044916e-01,'FINITE');
INSERT INTO "trial_values" VALUES(12,12,0,4.63320257768683851917e-01,'FINITE');
CREATE TABLE trials (
	trial_id INTEGER NOT NULL, 
	number INTEGER, 
	study_id INTEGER, 
	state VARCHAR(8) NOT NULL, 
	datetime_start DATETIME, 
	datetime_complete DATETIME, 
	PRIMARY KEY (trial_id), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
INSERT INTO "trials" VALUES(1,0,1,'COMPLETE','2026-12-02 06:08:09.966295','2026-12-02 06:08:10.185260');
INSERT INTO "trials" VALUES(2,1,1,'COMPLETE','2026-12-02 06:08:10.200401','2026-12-02 06:08:10.269395');
INSERT INTO "trials" VALUES(3,2,1,'COMPLETE','2026-12-02 06:08:10.280656','2026-12-02 06:08:10.347578');
INSERT INTO "trials" VALUES(4,0,2,'COMPLETE','2026-12-02 06:08:10.447116','2026-12-02 06:08:10.530115');
INSERT INTO "trials" VALUES(5,1,2,'COMPLETE','2026-12-02 06:08:10.544769','2026-12-02 06:08:10.600898');
INSERT INTO "trials" VALUES(6,2,2,'COMPLETE','2026-12-02 06:08:10.609687','2026-12-02 06:08:10.659948');
INSERT INTO "trials" VALUES(7,0,3,'COMPLETE','2026-12-02 06:08:10.731334','2026-12-02 06:08:10.825368');
INSERT INTO "trials" VALUES(8,1,3,'COMPLETE','2026-12-02 06:08:10.842522','2026-12-02 06:08:10.915721');
INSERT INTO "trials" VALUES(9,2,3,'COMPLETE','2026-12-02 06:08:10.925641','2026-12-02 06:08:10.994708');
INSERT INTO "trials" VALUES(10,0,4,'COMPLETE','2026-12-02 06:08:11.077035','2026-12-02 06:08:11.162857');
INSERT INTO "trials" VALUES(11,1,4,'COMPLETE','2026-12-02 06:08:11.177456','2026-12-02 06:08:11.251676');
INSERT INTO "trials" VALUES(12,2,4,'COMPLETE','2026-12-02 06:08:11.264576','2026-12-02 06:08:11.330500');
CREATE TABLE version_info (
	version_info_id INTEGER NOT NULL, 
	schema_version INTEGER, 
	library_version VARCHAR(256), 
	PRIMARY KEY (version_info_id), 
	CHECK (version_info_id=1)
);
INSERT INTO "version_info" VALUES(1,12,'5.0.0');
CREATE UNIQUE INDEX ix_studies_study_name ON studies (study_name);
CREATE INDEX ix_trials_study_id ON trials (study_id);
COMMIT;
