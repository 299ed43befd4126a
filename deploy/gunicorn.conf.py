"""gunicorn's settings for skillloop (docs/service.md, "Production"):

    gunicorn -c deploy/gunicorn.conf.py 'backend.service.wsgi:app'

behind deploy/nginx.conf. Flags on the command line win over these."""

import gunicorn.http.wsgi

bind = "127.0.0.1:9091"  # loopback: nginx is what clients reach
workers = 1
threads = 4
timeout = 120
graceful_timeout = 3

# gunicorn writes a `Server: gunicorn` header on every response, whatever the application
# sets; the service names itself instead (backend/service/shown.py), so a client learns
# nothing of the web stack (nginx, in front, writes `Server: nginx` without a version)
gunicorn.http.wsgi.SERVER = "skillloop"
