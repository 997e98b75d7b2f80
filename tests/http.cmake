# The HTTP servers' connection guard (issue 11): 1,000 slowloris connections
# from one address and from 50, against care-edge's console and care-hub's
# API, while a second client's health checks, logins, alarm reads and
# acknowledgements must all succeed within 3 s.
ch_integration_test(slow_clients slow_clients.py TIMEOUT 180)

# HTTPS on both servers with certificates from deploy/pki/carehub-pki: TLS,
# HSTS, Secure cookies, HTTP Basic only over HTTPS, and headless Chromium
# trusting the CA signing in and acknowledging over HTTPS.
ch_integration_test(https https.py TIMEOUT 180)
