-- Ranvier schema, version 10: media retention by last access, and URL previews. Keep sqlite/
-- and postgres/ identical.

-- When the media was last downloaded or thumbnailed (coarse: downloads are recorded in memory
-- and written out in batches). Retention deletes media not accessed for a configured time.
ALTER TABLE media ADD COLUMN last_access_ts BIGINT;
UPDATE media SET last_access_ts = COALESCE(uploaded_ts, created_ts);
CREATE INDEX media_by_last_access ON media (origin, last_access_ts);

-- Previews of URLs, kept per URL and period (fetched_ts rounded down to the cache period), so
-- that everyone asking for the same URL in one period gets one fetch. The preview's image is
-- ordinary local media (image_media_id).
CREATE TABLE url_previews (
    url TEXT NOT NULL,
    period_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    og TEXT NOT NULL,
    image_media_id TEXT,
    PRIMARY KEY (url, period_ts)
);
CREATE INDEX url_previews_by_fetched_ts ON url_previews (fetched_ts);
