-- 0002: the keyring's keys (period keys and instance secrets), each wrapped by the key-encryption key, so that
-- nodes share them through the database instead of a shared keyring directory. Never a key in clear: wrapped is
-- KEK.Wrap(id, key), and the KEK itself stays outside the database (a file, the environment or a KMS).

-- One row per key id. A destroyed key keeps its row with kek and wrapped set to NULL (a tombstone), so that the
-- period is never created again; its wrapped bytes are gone from the table (and, after VACUUM, from its pages).
CREATE TABLE wrapped_keys (
	id        text PRIMARY KEY,
	kek       text,
	wrapped   bytea,
	created   timestamptz NOT NULL DEFAULT now(),
	destroyed timestamptz,
	CHECK ((destroyed IS NULL) = (wrapped IS NOT NULL AND kek IS NOT NULL))
);
