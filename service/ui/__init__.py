"""The review console: server-rendered pages (Jinja2, autoescaped) with a small script, no build step."""
