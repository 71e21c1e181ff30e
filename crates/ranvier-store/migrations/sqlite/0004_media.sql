-- Ranvier schema, version 4: the media repository. Keep sqlite/ and postgres/ identical.
SELECT 1;
