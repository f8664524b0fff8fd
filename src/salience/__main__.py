from salience.cli import app

app()
