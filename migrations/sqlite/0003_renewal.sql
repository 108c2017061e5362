-- Renewal: every certificate knows the one it renewed, and events name both serials.
ALTER TABLE certificates ADD COLUMN predecessor_serial TEXT;
CREATE INDEX certificates_predecessor ON certificates (predecessor_serial) WHERE predecessor_serial IS NOT NULL;
ALTER TABLE enrollment_events ADD COLUMN predecessor_serial TEXT;
