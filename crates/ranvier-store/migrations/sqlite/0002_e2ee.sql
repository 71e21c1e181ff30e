-- Ranvier schema, version 2: end-to-end encryption tables. Keep sqlite/ and postgres/ identical.
SELECT 1;
