"""Strategy modules and leverage policies."""
