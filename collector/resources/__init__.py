"""What jobs may reach besides the web: the data root, the operator's connections, database engines, the SQL guard."""
