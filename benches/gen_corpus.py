#!/usr/bin/env python3
"""Generates a realistic payload corpus for benches/index.sh.

   gen_corpus.py DIR [MEGABYTES]      default 1000

About 40% JSON lead payloads (a lead with its activity history), 40% UBL-like
quotations with namespaces and line items, 20% 20-column CSV exports with a
LeadId column. Deterministic (seeded). Writes only under DIR.
"""
import os
import random
import sys

out = sys.argv[1]
target = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
rng = random.Random(4711)
FIRST = ["Anna", "Ben", "Clara", "David", "Elif", "Farid", "Greta", "Jonas"]
LAST = ["Müller", "Schmidt", "Fischer", "Weber", "Meyer", "Wagner", "Becker"]
WORDS = "call follow-up meeting offer discount renewal visit demo question price delivery".split()

def text(n):
    return " ".join(rng.choice(WORDS) for _ in range(n))

for sub in ("json", "xml", "csv"):
    os.makedirs(os.path.join(out, sub), exist_ok=True)

budget = {"json": target * 0.4e6, "xml": target * 0.4e6, "csv": target * 0.2e6}
written = {"json": 0, "xml": 0, "csv": 0}
lead = 0
while written["json"] < budget["json"]:
    lead += 1
    acts = ",\n".join(
        '    {"at": "2024-%02d-%02dT10:00:00Z", "type": "%s", "note": "%s"}'
        % (rng.randint(1, 12), rng.randint(1, 28), rng.choice(WORDS), text(25))
        for _ in range(rng.randint(40, 160))
    )
    f, l = rng.choice(FIRST), rng.choice(LAST)
    doc = (
        '{\n  "attributes": {"type": "Lead", "referenceId": "LeadRef%d"},\n'
        '  "lead": {"id": %d, "source": "web"},\n'
        '  "FirstName": "%s", "LastName": "%s", "Email": "%s.%d@example.com",\n'
        '  "activities": [\n%s\n  ]\n}\n' % (lead, lead, f, l, f.lower(), lead, acts)
    )
    d = os.path.join(out, "json", "%03d" % (lead % 1000))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "lead-%d.json" % lead), "w") as fh:
        fh.write(doc)
    written["json"] += len(doc.encode())

quote = 0
while written["xml"] < budget["xml"]:
    quote += 1
    lines = "\n".join(
        "  <cac:QuotationLine><cac:LineItem><cbc:ID>%d</cbc:ID><cbc:Quantity unitCode=\"EA\">%d</cbc:Quantity>"
        "<cbc:LineExtensionAmount currencyID=\"EUR\">%d.00</cbc:LineExtensionAmount><cac:Item><cbc:Description>%s</cbc:Description>"
        "<cbc:Name>%s</cbc:Name></cac:Item></cac:LineItem></cac:QuotationLine>"
        % (i, rng.randint(1, 50), rng.randint(10, 9000), text(12), text(3))
        for i in range(rng.randint(30, 120))
    )
    doc = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Quotation xmlns="urn:oasis:names:specification:ubl:schema:xsd:Quotation-2" '
        'xmlns:cac="urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2" '
        'xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">\n'
        "  <cbc:UBLVersionID>2.1</cbc:UBLVersionID>\n  <cbc:ID>Q-%d</cbc:ID>\n"
        "  <cac:BuyerCustomerParty><cac:Party><cac:Contact><cbc:Name>%s %s</cbc:Name></cac:Contact></cac:Party></cac:BuyerCustomerParty>\n"
        "%s\n</Quotation>\n" % (quote, rng.choice(FIRST), rng.choice(LAST), lines)
    )
    d = os.path.join(out, "xml", "%03d" % (quote % 1000))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "quote-%d.xml" % quote), "w") as fh:
        fh.write(doc)
    written["xml"] += len(doc.encode())

n = 0
cols = ["LeadId"] + ["Col%02d" % i for i in range(1, 20)]
while written["csv"] < budget["csv"]:
    n += 1
    rows = [";".join(cols)]
    size = 0
    while size < 5e6:
        row = ";".join([str(rng.randint(1, 10**9))] + ['"%s"' % text(2) for _ in range(19)])
        rows.append(row)
        size += len(row) + 2
    doc = "\r\n".join(rows) + "\r\n"
    with open(os.path.join(out, "csv", "export-%03d.csv" % n), "w") as fh:
        fh.write(doc)
    written["csv"] += len(doc.encode())

total = sum(written.values())
print("corpus %s: %.0f MB (json %d files, xml %d files, csv %d files)" % (out, total / 1e6, lead, quote, n))
