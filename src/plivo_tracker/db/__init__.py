"""Database layer: engine, dialect seam, migrations."""
