-- 0001: logs, their entries, the Merkle tree's stored hashes and the checkpoints.

-- One row per log. size is the number of entries durably appended; Append locks the row (SELECT … FOR UPDATE),
-- so appends to one log are serialised across every node while appends to other logs run in parallel.
CREATE TABLE logs (
	id      integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name    text NOT NULL UNIQUE,
	size    bigint NOT NULL DEFAULT 0 CHECK (size >= 0),
	created timestamptz NOT NULL DEFAULT now()
);

-- entries and hash_chunks carry the log's id without a foreign key: Append writes them in the transaction that
-- holds the log's row locked, and a foreign-key check per copied row cost about 40 % of the append rate.

-- One row per entry. The leaf fields (id, recorded, type, digest) are permanent; envelope and sealed become NULL
-- when retention destroys them. content_key is NULL when the server chose the event id.
CREATE TABLE entries (
	log         integer NOT NULL,
	idx         bigint NOT NULL CHECK (idx >= 0),
	id          uuid NOT NULL,
	recorded    bigint NOT NULL,
	type        text NOT NULL,
	digest      bytea NOT NULL CHECK (length(digest) = 32),
	salt        bytea NOT NULL CHECK (length(salt) = 16),
	envelope    bytea,
	sealed      bytea,
	content_key bytea CHECK (length(content_key) = 16),
	PRIMARY KEY (log, idx)
);

-- Sealed payloads are ciphertext: don't try to compress them.
ALTER TABLE entries ALTER COLUMN sealed SET STORAGE EXTERNAL;

-- LastOfType: the last entry of a type is one index probe.
CREATE INDEX entries_type ON entries (log, type, idx);

-- The tree's stored hashes, in golang.org/x/mod/sumdb/tlog order (StoredHashIndex), never rewritten, in chunks:
-- each row holds up to 32 consecutive stored hashes (32 bytes each) from stored-hash index first on, as Append
-- cut its batch's new hashes. 1 KiB rows stay inline (no TOAST): reading a hash is one index probe for the row at
-- or below its index and one heap page. Measured against one row per hash (about two per entry), appends of
-- 1,000 entries are about 1.4x faster and single-hash reads no slower.
CREATE TABLE hash_chunks (
	log    integer NOT NULL,
	first  bigint NOT NULL CHECK (first >= 0),
	hashes bytea NOT NULL CHECK (length(hashes) BETWEEN 32 AND 32 * 32 AND length(hashes) % 32 = 0),
	PRIMARY KEY (log, first)
);

-- The latest signed checkpoint per log (one row, created with the log; n = 0 and note NULL before the first).
-- SetCheckpoint locks it, which also serialises the sampling of the history across nodes. history_at is when
-- the history last kept a checkpoint (database clock).
CREATE TABLE checkpoints (
	log        integer PRIMARY KEY REFERENCES logs (id),
	n          bigint NOT NULL DEFAULT 0,
	note       bytea,
	history_at timestamptz
);

-- Checkpoints kept in the history, at most one per sampling interval.
CREATE TABLE checkpoint_history (
	log  integer NOT NULL REFERENCES logs (id),
	seq  bigint GENERATED ALWAYS AS IDENTITY,
	n    bigint NOT NULL,
	note bytea NOT NULL,
	at   timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (log, seq)
);
