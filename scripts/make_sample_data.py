"""Write the sample data shipped in plextera_data/data/ (deterministic: same bytes every time).

    python scripts/make_sample_data.py

- ``claims.csv``: 300 insurance claims for the ``incoming-claim`` workflow, sent as JSON. The
  document is referenced by a File Service id (``document.fileId``, a dotted column that nests).
  Like real intake data, a few rows are wrong: a handful have no document (the extraction step
  fails), a few carry a state or province the router does not serve (the routing step fails).
- ``lab-results.csv``: 200 lab results for the ``daily-lab-loader`` workflow.
- ``claim-documents/*.pdf`` and ``claims-with-documents.csv``: 6 small, valid one-page PDFs and
  the claims that upload them as multipart file parts (``document`` holds paths relative to the
  CSV).
"""

from __future__ import annotations

import csv
import random
from datetime import date, timedelta
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "plextera_data" / "data"
SEED = 20260115

SERVED_STATES = ["CT", "NY", "NJ", "MA", "PA", "CA", "TX", "FL", "IL", "OH", "GA", "WA"]
STATE_WEIGHTS = [14, 16, 10, 8, 8, 12, 10, 8, 5, 4, 3, 2]
UNSERVED = ["PR", "ON", "QC", "GU"]  # Puerto Rico, Ontario, Quebec, Guam: not routed
LINES = ["auto", "home", "health", "travel"]
LINE_WEIGHTS = [45, 25, 22, 8]
FIRST = [
    "Ana",
    "Ben",
    "Chloe",
    "David",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jamal",
    "Kate",
    "Luis",
    "Maya",
    "Noah",
    "Olga",
]
FIRST += ["Priya", "Quinn", "Rosa", "Sam", "Tara"]
LAST = [
    "Adams",
    "Baker",
    "Chen",
    "Diaz",
    "Evans",
    "Fischer",
    "Garcia",
    "Hughes",
    "Ito",
    "Jones",
    "Khan",
    "Lopez",
    "Miller",
]
LAST += ["Nguyen", "Okafor", "Patel", "Rossi", "Smith"]
TESTS = [
    ("HBA1C", "%", 4.0, 9.5),
    ("LDL", "mg/dL", 60, 220),
    ("TSH", "mIU/L", 0.3, 6.5),
    ("CRP", "mg/L", 0.1, 25.0),
    ("FERRITIN", "ng/mL", 12, 400),
]
LABS = ["North Valley Labs", "Harbor Diagnostics", "Summit Clinical"]
START = date(2026, 1, 5)


def file_id(rng: random.Random) -> str:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, like the vendor's ids
    return "file_01J" + "".join(rng.choice(alphabet) for _ in range(23))


def claims(rng: random.Random, count: int = 300) -> list[dict[str, str]]:
    rows = []
    for number in range(1, count + 1):
        line = rng.choices(LINES, LINE_WEIGHTS)[0]
        state = rng.choices(SERVED_STATES, STATE_WEIGHTS)[0]
        if rng.random() < 0.03:
            state = rng.choice(UNSERVED)
        amount = {"auto": 2400, "home": 6800, "health": 900, "travel": 450}[line]
        rows.append(
            {
                "claimId": f"claim-{number:04d}",
                "state": state,
                "lineOfBusiness": line,
                "policyholder": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                "amountClaimed": f"{rng.lognormvariate(0, 0.6) * amount:.2f}",
                "submittedOn": (START + timedelta(days=rng.randrange(0, 28))).isoformat(),
                "document.fileId": "" if rng.random() < 0.04 else file_id(rng),
            }
        )
    return rows


def lab_results(rng: random.Random, count: int = 200) -> list[dict[str, str]]:
    rows = []
    for number in range(1, count + 1):
        test, unit, low, high = rng.choice(TESTS)
        value = rng.uniform(low, high)
        rows.append(
            {
                "sampleId": f"S-{number:05d}",
                "customerId": f"customer-{rng.randint(1, 60)}",
                "lab": rng.choice(LABS),
                "test": test,
                "value": f"{value:.2f}",
                "unit": unit,
                "collectedOn": (START + timedelta(days=rng.randrange(0, 14))).isoformat(),
                "document.fileId": file_id(rng),
            }
        )
    return rows


def tiny_pdf(lines: list[str]) -> bytes:
    """A valid one-page PDF showing ``lines`` in Helvetica (byte offsets computed exactly)."""
    text = "BT /F1 12 Tf 72 720 Td 16 TL " + " ".join(
        "(" + line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") Tj T*"
        for line in lines
    )
    text += " ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(text) + text.encode("latin-1") + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    rng = random.Random(SEED)
    DATA.mkdir(parents=True, exist_ok=True)
    write_csv(DATA / "claims.csv", claims(rng))
    write_csv(DATA / "lab-results.csv", lab_results(rng))

    documents = DATA / "claim-documents"
    documents.mkdir(exist_ok=True)
    with_documents = []
    for number, state in enumerate(["CT", "NY", "CA", "TX", "MA", "ON"], start=1):
        claim_id = f"claim-9{number:03d}"
        name = f"{claim_id}.pdf"
        amount = f"{rng.uniform(300, 4000):.2f}"
        (documents / name).write_bytes(
            tiny_pdf(
                [
                    "ACME Mutual - Claim form",
                    f"Claim: {claim_id}",
                    f"State: {state}",
                    f"Amount claimed: USD {amount}",
                    f"Policyholder: {rng.choice(FIRST)} {rng.choice(LAST)}",
                ]
            )
        )
        with_documents.append(
            {"claimId": claim_id, "state": state, "document": f"claim-documents/{name}"}
        )
    write_csv(DATA / "claims-with-documents.csv", with_documents)
    print(f"wrote the sample data into {DATA}")


if __name__ == "__main__":
    main()
