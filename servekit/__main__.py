from servekit.cli import app

app(prog_name="servekit")
