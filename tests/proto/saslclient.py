# SPDX-License-Identifier: ISC
"""Independent SASL client computations (standard library only) for the ODMR tests."""
import base64
import hashlib
import hmac
import os


def b64(data):
    return base64.b64encode(data if isinstance(data, bytes) else data.encode()).decode()


def unb64(text):
    return base64.b64decode(text)


def cram_md5_response(user, secret, challenge_b64):
    """RFC 2195: base64(user SP lowercase-hex(HMAC-MD5(secret, challenge)))."""
    challenge = unb64(challenge_b64)
    digest = hmac.new(secret.encode(), challenge, hashlib.md5).hexdigest()
    return b64("%s %s" % (user, digest))


class ScramSha256:
    """RFC 5802 / RFC 7677 client, optionally with tls-exporter channel binding (RFC 9266)."""

    def __init__(self, user, password, channel_binding=None):
        self.user = user
        self.password = password
        self.cb = channel_binding
        self.nonce = b64(os.urandom(18))
        self.gs2 = "p=tls-exporter,," if channel_binding is not None else "n,,"

    def first(self):
        self.bare = "n=%s,r=%s" % (self.user.replace("=", "=3D").replace(",", "=2C"), self.nonce)
        return b64(self.gs2 + self.bare)

    def final(self, server_first_b64):
        server_first = unb64(server_first_b64).decode()
        fields = dict(item.split("=", 1) for item in server_first.split(","))
        assert fields["r"].startswith(self.nonce)
        salt = unb64(fields["s"])
        iterations = int(fields["i"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        cbind = self.gs2.encode() + (self.cb or b"")
        without_proof = "c=%s,r=%s" % (b64(cbind), fields["r"])
        self.auth_message = "%s,%s,%s" % (self.bare, server_first, without_proof)
        signature = hmac.new(stored_key, self.auth_message.encode(), hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.expected_server_signature = hmac.new(server_key, self.auth_message.encode(),
                                                  hashlib.sha256).digest()
        return b64("%s,p=%s" % (without_proof, b64(proof)))

    def verify(self, server_final_b64):
        text = unb64(server_final_b64).decode()
        return text == "v=" + b64(self.expected_server_signature)
