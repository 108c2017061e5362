-- How many entries each stored CRL lists, for the metrics (the CRL itself may be tens of MB).
ALTER TABLE crls ADD COLUMN entry_count BIGINT NOT NULL DEFAULT 0;
