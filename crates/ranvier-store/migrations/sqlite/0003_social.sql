-- Ranvier schema, version 3: the social layer (profiles, receipts, presence, aliases, directory). Keep sqlite/ and postgres/ identical.
SELECT 1;
