"""How the read model is stored: models, engine factory, migrations. Imports nothing from consumer or handlers."""
