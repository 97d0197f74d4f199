"""Write the sample data shipped in plextera_data/data/ (deterministic: same bytes every time).

    python scripts/make_sample_data.py

- ``claims.csv``: 300 insurance claims for the ``incoming-claim`` workflow, sent as JSON. The
  document is referenced by a File Service id (``document.fileId``, a dotted column that nests);
  the documents are in ``workspace-files/`` (a one-page PDF each, listed in its
  ``manifest.csv``), which the simulator holds from the start as files uploaded earlier. Like
  real intake data, a few rows are wrong or hard: a handful have no document (the extraction
  step fails), a few carry a state or province the router does not serve (the routing step
  fails), a few were keyed with another amount than their document states, and a few documents
  are scans without a text layer (nothing to extract). ``README.md`` names them.
- ``lab-results.csv``: 200 lab results for the ``daily-lab-loader`` workflow (whose step takes
  the values from the row; its ``document.fileId`` is a reference that is not opened).
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


def claim_form(claim: dict[str, str], amount: str) -> list[str]:
    """The lines of a claim's PDF form, stating ``amount``."""
    return [
        "ACME Mutual - Claim form",
        f"Claim: {claim['claimId']}",
        f"State: {claim['state']}",
        f"Line of business: {claim['lineOfBusiness']}",
        f"Amount claimed: USD {amount}",
        f"Policyholder: {claim['policyholder']}",
        f"Submitted: {claim['submittedOn']}",
    ]


def miskeyed(amount: str, rng: random.Random) -> str:
    """The amount as a clerk might have keyed it: two digits swapped, or the point moved."""
    digits = amount.replace(".", "")
    if rng.random() < 0.5 and len(digits) > 3:
        i = rng.randrange(0, len(digits) - 3)
        swapped = digits[:i] + digits[i + 1] + digits[i] + digits[i + 2 :]
        if swapped != digits:
            return f"{int(swapped[:-2])}.{swapped[-2:]}"
    return f"{float(amount) * 10:.2f}"


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


def scanned_pdf() -> bytes:
    """A valid one-page PDF with no text layer (a grey box where a scan would be)."""
    return tiny_pdf([]).replace(b"BT /F1 12 Tf 72 720 Td 16 TL  ET", b"0.85 g 72 320 468 400 re f")


def workspace_files(
    rows: list[dict[str, str]], rng: random.Random
) -> tuple[dict[str, list[str]], list[dict[str, str]]]:
    """Write a PDF for each claim that has a document, and the manifest the simulator reads.

    Most forms state the amount the CSV holds. A few (``miskeyed``) state the amount the CSV
    should have held; a few (``scanned``) are scans without text. Returns those claim ids and the
    manifest rows.
    """
    folder = DATA / "workspace-files"
    if folder.exists():
        for old in folder.iterdir():
            old.unlink()
    folder.mkdir(exist_ok=True)
    with_document = [row for row in rows if row["document.fileId"]]
    served = [row for row in with_document if row["state"] not in UNSERVED]
    cases = rng.sample(served, 8)
    special = {"miskeyed": cases[:5], "scanned": cases[5:]}
    manifest = []
    for row in with_document:
        name = f"{row['claimId']}.pdf"
        if row in special["scanned"]:
            data = scanned_pdf()
        elif row in special["miskeyed"]:
            # The document is right; the CSV was keyed wrong.
            keyed = miskeyed(row["amountClaimed"], rng)
            data = tiny_pdf(claim_form(row, row["amountClaimed"]))
            row["amountClaimed"] = keyed
        else:
            data = tiny_pdf(claim_form(row, row["amountClaimed"]))
        (folder / name).write_bytes(data)
        file_id = row["document.fileId"]
        manifest.append({"id": file_id, "name": name, "mimeType": "application/pdf", "path": name})
    ids = {case: sorted(row["claimId"] for row in found) for case, found in special.items()}
    return ids, manifest


README = """# Sample data

Written by `scripts/make_sample_data.py` (run it again to regenerate; the output is the same bytes
every time). Loaded with `plextera_data.demo.load_sample(name)`.

- `claims.csv`: 300 claims for `incoming-claim`, sent as JSON (`document.fileId` nests into
  `{{"document": {{"fileId": ...}}}}`).
- `workspace-files/`: the {documents} PDFs `claims.csv` refers to, already in the simulator's
  File Service.
- `claims-with-documents.csv` and `claim-documents/`: 6 claims for `incoming-claim`, sent as
  multipart with the PDF as a file part.
- `lab-results.csv`: 200 lab results for `daily-lab-loader`, sent as JSON (its step takes the
  values from the row and does not open the document).

`workspace-files/manifest.csv` lists each document's File Service id, name and media type. Every
`Simulator()` starts with these files (`Simulator(with_sample_files=False)` leaves them out), as a
workspace holds documents uploaded earlier; the real service knows none of these ids.

## Where the extracted values are meant to differ

The workflow's first step, *Extracted Document*, returns what the claim's document says: its
claim id, state and `amount` (output `fields[0..2]`). For every claim the CSV's `amountClaimed`
equals the extracted amount, except:

- **Miskeyed at intake** ({n_miskeyed}): the form states the true amount, the CSV holds it keyed
  wrong (two digits swapped, or the point moved): {miskeyed}.
- **Scans without text** ({n_scanned}): nothing can be read, so `claimId`, `state` and `amount`
  come back `null` with confidence 0 (the run still completes): {scanned}.
- **No document** ({n_missing}): `document.fileId` is empty, so the extraction step fails with
  `UNSUPPORTED_DOCUMENT` and there is nothing to compare: {missing}.
- **Not routed** ({n_unserved}): the state is not one the router serves (`PR`, `ON`, `QC`, `GU`),
  so the second step fails after a correct extraction: {unserved}.

The six multipart claims (`claims-with-documents.csv`) all agree with their PDFs; `claim-9006`
(Ontario) is not routed.
"""


def write_readme(rows: list[dict[str, str]], ids: dict[str, list[str]], documents: int) -> None:
    missing = [row["claimId"] for row in rows if not row["document.fileId"]]
    unserved = [row["claimId"] for row in rows if row["state"] in UNSERVED]

    def names(found: list[str]) -> str:
        return ", ".join(f"`{claim_id}`" for claim_id in found)

    text = README.format(
        documents=documents,
        n_miskeyed=len(ids["miskeyed"]),
        miskeyed=names(ids["miskeyed"]),
        n_scanned=len(ids["scanned"]),
        scanned=names(ids["scanned"]),
        n_missing=len(missing),
        missing=names(missing),
        n_unserved=len(unserved),
        unserved=names(unserved),
    )
    (DATA / "README.md").write_text(text, encoding="utf-8")


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    rng = random.Random(SEED)
    DATA.mkdir(parents=True, exist_ok=True)
    claim_rows = claims(rng)
    # A generator of its own, so the documents change nothing else in the sample.
    ids, manifest = workspace_files(claim_rows, random.Random(f"{SEED}:documents"))
    write_csv(DATA / "claims.csv", claim_rows)
    write_csv(DATA / "workspace-files" / "manifest.csv", manifest)
    write_readme(claim_rows, ids, len(manifest))
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
            {
                "claimId": claim_id,
                "state": state,
                "amountClaimed": amount,
                "document": f"claim-documents/{name}",
            }
        )
    write_csv(DATA / "claims-with-documents.csv", with_documents)
    print(f"wrote the sample data into {DATA}")


if __name__ == "__main__":
    main()
