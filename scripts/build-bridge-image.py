#!/usr/bin/env python3
"""Write the bridge's OCI image layout: one image index, one image per platform.

    build-bridge-image.py --out DIR --binary amd64=PATH --binary arm64=PATH \
        --ca-bundle /etc/ssl/certs/ca-certificates.crt --version 0.1.0 --revision SHA \
        [--source URL] [--epoch SOURCE_DATE_EPOCH] [--ref-name NAME]

Each image has one layer holding the static binary at /bridge, /etc/passwd and /etc/group
naming the user 65532 ("nonroot"), and the CA bundle: kube's and the AWS SDK's rustls
clients load their roots from the system (rustls-native-certs), and without any the bridge
exits as it starts ("No CA certificates were loaded from the system"). No shell, no package
manager: nothing else.

Reproducible: the same binaries, bundle and arguments give the same bytes, hence the same
index digest. Tar entries are sorted with fixed owners (0:0, numeric only), modes and
mtime (the epoch); gzip's header has no name and mtime 0; JSON is serialised with sorted
keys and no spaces. Only the Python standard library is used.
"""

import argparse
import datetime
import hashlib
import io
import json
import os
import pathlib
import shutil
import struct
import sys
import tarfile
import tempfile
import zlib

INDEX_MT = "application/vnd.oci.image.index.v1+json"
MANIFEST_MT = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MT = "application/vnd.oci.image.config.v1+json"
LAYER_MT = "application/vnd.oci.image.layer.v1.tar+gzip"

UID = GID = 65532
CA_PATH = "etc/ssl/certs/ca-certificates.crt"
PLATFORMS = {
    # OCI platform of each architecture this script knows; the ELF machine its binary
    # must be (checked, so a binary is never packed under the wrong platform).
    "amd64": ({"architecture": "amd64", "os": "linux"}, 62),
    "arm64": ({"architecture": "arm64", "os": "linux", "variant": "v8"}, 183),
}


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_static_elf(path, machine):
    """Refuse what would not run in a scratch image: not ELF, another machine, or dynamic."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            sys.exit(f"{path}: not a 64-bit little-endian ELF file")
        e_machine = struct.unpack_from("<H", head, 18)[0]
        if e_machine != machine:
            sys.exit(f"{path}: ELF machine {e_machine}, expected {machine}")
        e_phoff = struct.unpack_from("<Q", head, 32)[0]
        e_phentsize, e_phnum = struct.unpack_from("<HH", head, 54)
        f.seek(e_phoff)
        table = f.read(e_phentsize * e_phnum)
    for i in range(e_phnum):
        if struct.unpack_from("<I", table, i * e_phentsize)[0] == 3:  # PT_INTERP
            sys.exit(f"{path}: dynamically linked (has an interpreter); build for musl")


def layer_tar(binary, ca_bundle, epoch):
    """The uncompressed layer: entries sorted by name, every field fixed."""
    files = {
        "bridge": (pathlib.Path(binary).read_bytes(), 0o555),
        "etc/passwd": (f"nonroot:x:{UID}:{GID}:nonroot:/:/sbin/nologin\n".encode(), 0o444),
        "etc/group": (f"nonroot:x:{GID}:\n".encode(), 0o444),
        CA_PATH: (pathlib.Path(ca_bundle).read_bytes(), 0o444),
    }
    dirs = set()
    for name in files:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    entries = [(d + "/", None, 0o755) for d in dirs]
    entries += [(n, data, mode) for n, (data, mode) in files.items()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data, mode in sorted(entries):
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mode = mode
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = epoch
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_bytes(data):
    """gzip with a fixed header (no name, mtime 0, OS unknown), whatever Python's version."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS, 9)
    body = comp.compress(data) + comp.flush()
    header = b"\x1f\x8b\x08\x00" + b"\x00\x00\x00\x00" + b"\x02\xff"
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return header + body + trailer


class Layout:
    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, "blobs", "sha256"))

    def blob(self, media_type, data, **extra):
        d = digest(data)
        with open(os.path.join(self.root, "blobs", "sha256", d.split(":", 1)[1]), "wb") as f:
            f.write(data)
        return dict(mediaType=media_type, digest=d, size=len(data), **extra)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the OCI layout directory (replaced)")
    p.add_argument("--binary", action="append", required=True, metavar="ARCH=PATH")
    p.add_argument("--ca-bundle", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--revision", required=True)
    p.add_argument("--source", default="")
    p.add_argument("--epoch", type=int, default=int(os.environ.get("SOURCE_DATE_EPOCH", "0")))
    p.add_argument("--ref-name", default=None, help="the tag in index.json (default: --version)")
    p.add_argument("--ca-origin", default="", help="where the CA bundle came from, for history")
    a = p.parse_args()

    binaries = {}
    for spec in a.binary:
        arch, _, path = spec.partition("=")
        if arch not in PLATFORMS or not path:
            sys.exit(f"--binary {spec}: want ARCH=PATH with ARCH one of {', '.join(PLATFORMS)}")
        check_static_elf(path, PLATFORMS[arch][1])
        binaries[arch] = path

    created = datetime.datetime.fromtimestamp(a.epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {
        "org.opencontainers.image.title": "stashless-bridge",
        "org.opencontainers.image.description": "stashless watch bridge: Stash kinds' watch events to EventBridge",
        "org.opencontainers.image.revision": a.revision,
        "org.opencontainers.image.version": a.version,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }
    if a.source:
        labels["org.opencontainers.image.source"] = a.source

    # Written beside the destination and renamed into place: a failed run leaves the last
    # good image, never half of one.
    out = os.path.abspath(a.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(out))
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the image from other users
    try:
        layout = Layout(tmp)
        manifests = []
        for arch in sorted(binaries):
            platform = PLATFORMS[arch][0]
            tar = layer_tar(binaries[arch], a.ca_bundle, a.epoch)
            layer = layout.blob(LAYER_MT, gzip_bytes(tar))
            config = {
                "created": created,
                **platform,
                "config": {
                    "User": f"{UID}:{GID}",
                    "Entrypoint": ["/bridge"],
                    # rustls-native-certs reads this before probing OpenSSL's usual places.
                    "Env": ["SSL_CERT_FILE=/" + CA_PATH],
                    "WorkingDir": "/",
                    # STASHLESS_HEALTH_ADDR's default, serving /healthz.
                    "ExposedPorts": {"8080/tcp": {}},
                    "Labels": labels,
                },
                "rootfs": {"type": "layers", "diff_ids": [digest(tar)]},
                "history": [
                    {
                        "created": created,
                        "created_by": "scripts/build-bridge-image.py",
                        "comment": f"/bridge (static, {arch}), /etc/passwd and /etc/group (65532 nonroot), "
                        f"/{CA_PATH}" + (f" ({a.ca_origin})" if a.ca_origin else ""),
                    }
                ],
            }
            cfg = layout.blob(CONFIG_MT, canonical(config))
            manifest = {"schemaVersion": 2, "mediaType": MANIFEST_MT, "config": cfg, "layers": [layer]}
            manifests.append(layout.blob(MANIFEST_MT, canonical(manifest), platform=platform))
        index = {"schemaVersion": 2, "mediaType": INDEX_MT, "manifests": manifests}
        ref = a.ref_name or a.version
        top = layout.blob(INDEX_MT, canonical(index), annotations={"org.opencontainers.image.ref.name": ref})
        with open(os.path.join(tmp, "oci-layout"), "wb") as f:
            f.write(canonical({"imageLayoutVersion": "1.0.0"}))
        with open(os.path.join(tmp, "index.json"), "wb") as f:
            f.write(canonical({"schemaVersion": 2, "mediaType": INDEX_MT, "manifests": [top]}))
        if os.path.exists(out):
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    print(f"image     {out}:{ref}")
    print(f"index     {top['digest']}")
    for m in manifests:
        mf = json.loads(pathlib.Path(out, "blobs", "sha256", m["digest"].split(":", 1)[1]).read_bytes())
        layer = mf["layers"][0]
        arch = m["platform"]["architecture"]
        print(
            f"{arch:<9} manifest {m['digest']}  layer {layer['size']} bytes (gzip)  "
            f"binary {os.path.getsize(binaries[arch])} bytes"
        )


if __name__ == "__main__":
    main()
