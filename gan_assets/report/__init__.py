"""Report core: previews, charts and documents. No Dagster imports."""
