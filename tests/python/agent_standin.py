"""A stand-in for a node agent's HTTPS interface (docs/apiserver.md), so the
apiserver's log/exec proxy can be tested before the agent exists: it
answers /containerLogs with a line naming what was asked, and /exec over a
WebSocket (v5.channel.k8s.io) with the command echoed on stdout and a
Success status. Usage: agent_standin.py PORT CERT KEY TOKEN"""
import base64
import hashlib
import http.server
import ssl
import sys
import urllib.parse

port, cert, key, token = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode, payload):
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + payload


class Agent(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, text):
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.headers.get("Authorization") != "Bearer " + token:
            return self.reply(401, "Unauthorized")
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        query = urllib.parse.parse_qs(url.query)
        if parts[0] == "containerLogs" and len(parts) == 4:
            flat = "&".join("%s=%s" % (k, v[0]) for k, v in sorted(query.items()))
            return self.reply(200, "log of %s/%s/%s\nquery: %s\n" % (parts[1], parts[2], parts[3], flat))
        if parts[0] == "exec" and self.headers.get("Upgrade", "").lower() == "websocket":
            offered = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")]
            protocol = "v5.channel.k8s.io" if "v5.channel.k8s.io" in offered else offered[0]
            accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + GUID).encode()).digest())
            self.wfile.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + b"Sec-WebSocket-Accept: " + accept + b"\r\n"
                + b"Sec-WebSocket-Protocol: " + protocol.encode() + b"\r\n\r\n")
            output = " ".join(query.get("command", [])) + "\n"
            self.wfile.write(frame(2, b"\x01" + output.encode()))
            self.wfile.write(frame(2, b"\x03" + b'{"metadata":{},"status":"Success"}'))
            self.wfile.write(frame(8, b"\x03\xe8"))
            self.wfile.flush()
            self.close_connection = True
            return
        return self.reply(404, "no such path " + url.path)


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Agent)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
