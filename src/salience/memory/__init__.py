"""What salience remembers: extraction, embedding, recall and injection."""
