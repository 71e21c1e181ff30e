-- Ranvier schema, version 4: the media repository. Keep sqlite/ and postgres/ identical.

-- One row per mxc:// URI. A row from POST /_matrix/media/v1/create has no content yet
-- (uploaded_ts IS NULL) until its upload arrives or unused_expires_ts passes. The bytes live in
-- the media storage under their SHA-256, so identical uploads share one file.
CREATE TABLE media (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    uploader TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    unused_expires_ts BIGINT,
    uploaded_ts BIGINT,
    content_type TEXT,
    upload_name TEXT,
    sha256 TEXT,
    size BIGINT,
    -- 1 when the media may only be downloaded through the authenticated endpoints (uploaded
    -- while unauthenticated media access was frozen).
    authenticated BIGINT NOT NULL DEFAULT 1,
    quarantined_ts BIGINT,
    quarantined_by TEXT,
    PRIMARY KEY (origin, media_id)
);
CREATE INDEX media_by_uploader ON media (uploader, created_ts);
CREATE INDEX media_by_sha256 ON media (sha256);
CREATE INDEX media_by_uploaded_ts ON media (uploaded_ts);

-- Thumbnails, generated on demand at one of the standard sizes and kept. A thumbnail of an
-- image no larger than the size asked for points at the original's content.
CREATE TABLE media_thumbnails (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, media_id, width, height, method)
);
CREATE INDEX media_thumbnails_by_sha256 ON media_thumbnails (sha256);
