-- Per partition of the topic, the least offset it must end at after what the broker
-- acknowledged to the relay (saved with the checkpoint). A topic that is missing, ends
-- before it, or acknowledges a record below it lost records (a broker restarted on
-- memory storage, a topic deleted or recreated): the relay rewinds its checkpoint to the
-- start and publishes again; consumers dedupe by event id.
ALTER TABLE relay_checkpoints ADD COLUMN min_ends jsonb NOT NULL DEFAULT '{}';
