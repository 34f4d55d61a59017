"""Python with its C extensions doing real work under the tracer: json, zlib, bz2, lzma, hashlib, sqlite3,
struct, re, decimal, csv, threads (zlib and hashlib release the GIL). Run with /usr/bin/python3 (Debian's build,
which allocates through the system malloc; the test also sets PYTHONMALLOC=malloc so every object does).

stdout is deterministic: digests and counts, then "ok"."""
import bz2
import csv
import decimal
import hashlib
import io
import json
import lzma
import re
import sqlite3
import struct
import threading
import zlib

data = [{"id": i, "name": "item-%d" % i, "tags": ["t%d" % (i % 7), "u%d" % (i % 11)], "v": i * 0.5} for i in range(20000)]
text = json.dumps(data, sort_keys=True).encode()
print("json", len(text), hashlib.sha256(text).hexdigest()[:16])
assert json.loads(text) == data

z = zlib.compress(text, 6)
assert zlib.decompress(z) == text
b = bz2.compress(text[:200000])
assert bz2.decompress(b) == text[:200000]
x = lzma.compress(text[:100000])
assert lzma.decompress(x) == text[:100000]
print("compressed", len(z), len(b), len(x))

db = sqlite3.connect(":memory:")
db.execute("create table t (id integer primary key, name text, v real)")
db.executemany("insert into t values (?, ?, ?)", [(d["id"], d["name"], d["v"]) for d in data])
db.execute("create index t_name on t(name)")
(count, total) = db.execute("select count(*), sum(v) from t where name like 'item-1%'").fetchone()
print("sqlite", count, total)
db.close()

words = re.findall(rb"item-(\d+)", text)
print("re", len(words), sum(int(w) for w in words[:1000]))

decimal.getcontext().prec = 50
print("decimal", decimal.Decimal(1) / decimal.Decimal(7))

buf = io.StringIO()
w = csv.writer(buf)
for d in data[:5000]:
    w.writerow([d["id"], d["name"], d["v"]])
print("csv", len(buf.getvalue()), hashlib.md5(buf.getvalue().encode()).hexdigest()[:12])

packed = b"".join(struct.pack("<iqd", i, i * i, i / 3) for i in range(10000))
print("struct", len(packed), zlib.crc32(packed))

results = [None] * 4


def work(k):
    h = hashlib.sha1()
    for i in range(200):
        chunk = zlib.compress(text[i * 1000:(i + 1) * 1000 + k])
        h.update(zlib.decompress(chunk))
    results[k] = h.hexdigest()[:12]


threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("threads", results)
print("ok")
