"""The OpenID provider of tests/tests/oidc.rs: oidc-provider-mock (a real authorization server,
authlib underneath: discovery, JWKS, authorization code flow, RS256 ID tokens), plus one
test-only endpoint that makes the next ID token it issues wrong in one way, the way an attacker
or a misconfigured provider would:

  POST /test/next-id-token {"mode": "forged"}     signed by another key under the same kid
  POST /test/next-id-token {"mode": "wrong_aud"}  for another client
  POST /test/next-id-token {"mode": "expired"}    expired an hour ago
  POST /test/next-id-token {"mode": "wrong_iss"}  from another issuer
  POST /test/next-id-token {"mode": "no_nonce"}   without the nonce of the request
  POST /test/next-id-token {"mode": "wrong_nonce"} with another nonce
  POST /test/next-id-token {"mode": "hs256"}       HS256 with the client secret as the key (the
                                                  algorithm confusion a verifier must refuse)

Every other token is re-signed untouched. Usage: idp.py PORT (0: any); prints "listening PORT".
"""

import sys
import time

import flask
import oidc_provider_mock
import werkzeug.serving
from authlib.jose import JsonWebKey, jwt

app = oidc_provider_mock.app(require_nonce=True)
# The client secret tests/tests/oidc.rs configures.
CLIENT_SECRET = "s3cret"
next_mode = {"mode": None}


@app.post("/test/next-id-token")
def set_next_id_token():
    mode = (flask.request.get_json(force=True) or {}).get("mode")
    if mode not in ("forged", "wrong_aud", "expired", "wrong_iss", "no_nonce", "wrong_nonce", "hs256"):
        return {"error": f"unknown mode {mode!r}"}, 400
    next_mode["mode"] = mode
    return "", 204


@app.after_request
def spoil_id_token(response):
    mode = next_mode["mode"]
    if mode is None or flask.request.path != "/oauth2/token" or response.status_code != 200:
        return response
    next_mode["mode"] = None
    body = response.get_json()
    token = body["id_token"]
    storage = flask.g.oidc_provider_mock_storage
    key = storage.jwk
    claims = jwt.decode(token, key)
    header = {"alg": "RS256", "kid": key.as_dict()["kid"]}
    if mode == "forged":
        # The provider's key id, somebody else's key: only a signature check tells them apart.
        key = JsonWebKey.generate_key("RSA", 2048, is_private=True)
    elif mode == "wrong_aud":
        claims["aud"] = "some-other-client"
    elif mode == "expired":
        claims["iat"] = int(time.time()) - 7200
        claims["exp"] = int(time.time()) - 3600
    elif mode == "wrong_iss":
        claims["iss"] = "https://login.example.net"
    elif mode == "no_nonce":
        claims.pop("nonce", None)
    elif mode == "wrong_nonce":
        claims["nonce"] = "a-nonce-of-another-sign-in"
    elif mode == "hs256":
        header = {"alg": "HS256"}
        key = JsonWebKey.import_key(CLIENT_SECRET, {"kty": "oct"})
    body["id_token"] = jwt.encode(header, dict(claims), key).decode()
    response.set_data(flask.json.dumps(body))
    return response


if __name__ == "__main__":
    server = werkzeug.serving.make_server("127.0.0.1", int(sys.argv[1]), app, threaded=True)
    print(f"listening {server.server_port}", flush=True)
    server.serve_forever()
