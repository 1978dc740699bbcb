"""A build backend that leaves a mark when it runs (PEP 517/660, standard library only)."""
import base64, hashlib, os, zipfile

MARK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "BUILD-BACKEND-RAN")


def _wheel(directory, editable=False):
    with open(MARK, "a") as fh:
        fh.write("built\n")
    name = "bk-0.1.0-py3-none-any.whl"
    files = {"bk-0.1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: bk\nVersion: 0.1.0\n",
             "bk-0.1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: backend\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    with zipfile.ZipFile(os.path.join(directory, name), "w") as zf:
        for path, text in files.items():
            data = text.encode()
            zf.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append("bk-0.1.0.dist-info/RECORD,,")
        zf.writestr("bk-0.1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory, editable=True)


def build_sdist(sdist_directory, config_settings=None):
    raise NotImplementedError
