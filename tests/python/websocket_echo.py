"""A WebSocket echo server and client with the standard library only (RFC
6455: the handshake, text frames, masking), for the Ingress test.

  websocket_echo.py serve PORT          echoes every text message, prefixed "echo: "
  websocket_echo.py send HOST PORT NAME PATH MESSAGE...
                                        connects to HOST:PORT with Host: NAME,
                                        upgrades PATH, sends each MESSAGE and
                                        prints each answer on a line
"""

import base64
import hashlib
import os
import socket
import struct
import sys
import threading

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def read_headers(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("connection closed during the handshake")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, rest


def recv_exact(sock, n, buffer):
    while len(buffer) < n:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("connection closed")
        buffer += chunk
    return buffer[:n], buffer[n:]


def read_frame(sock, buffer):
    head, buffer = recv_exact(sock, 2, buffer)
    opcode = head[0] & 0x0F
    masked = head[1] & 0x80
    length = head[1] & 0x7F
    if length == 126:
        ext, buffer = recv_exact(sock, 2, buffer)
        length = struct.unpack(">H", ext)[0]
    elif length == 127:
        ext, buffer = recv_exact(sock, 8, buffer)
        length = struct.unpack(">Q", ext)[0]
    mask = b""
    if masked:
        mask, buffer = recv_exact(sock, 4, buffer)
    payload, buffer = recv_exact(sock, length, buffer)
    if masked:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, payload, buffer


def frame(opcode, payload, mask):
    head = bytes([0x80 | opcode])
    length = len(payload)
    bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([bit | length])
    elif length < 65536:
        head += bytes([bit | 126]) + struct.pack(">H", length)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", length)
    if mask:
        key = os.urandom(4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


def serve_one(conn):
    try:
        _, headers, buffer = read_headers(conn)
        accept = base64.b64encode(
            hashlib.sha1((headers["sec-websocket-key"] + GUID).encode()).digest()
        ).decode()
        conn.sendall(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        while True:
            opcode, payload, buffer = read_frame(conn, buffer)
            if opcode == 8:
                conn.sendall(frame(8, b"", False))
                return
            if opcode == 1:
                conn.sendall(frame(1, b"echo: " + payload, False))
    except (EOFError, OSError, KeyError):
        pass
    finally:
        conn.close()


def serve(port):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(16)
    print("listening", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve_one, args=(conn,), daemon=True).start()


def send(host, port, name, path, messages):
    sock = socket.create_connection((host, port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {name}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    status, headers, buffer = read_headers(sock)
    if " 101 " not in status + " ":
        print(status)
        sys.exit(1)
    expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    if headers.get("sec-websocket-accept") != expected:
        print("bad Sec-WebSocket-Accept:", headers.get("sec-websocket-accept"))
        sys.exit(1)
    for message in messages:
        sock.sendall(frame(1, message.encode(), True))
        _, payload, buffer = read_frame(sock, buffer)
        print(payload.decode())
    sock.sendall(frame(8, b"", True))
    sock.close()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        send(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6:])
