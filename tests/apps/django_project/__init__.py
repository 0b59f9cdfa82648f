"""A minimal Django project: settings, URLs and views in three small modules."""
