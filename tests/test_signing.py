"""AWS Signature Version 4 against AWS's published test suite (tests/data/aws4_testsuite: see
its NOTICE and LICENSE; from awslabs/aws-c-auth tests/aws-sig-v4-test-suite as vendored by
boto/botocore tests/unit/auth/aws4_testsuite). One case per `.req`: the canonical request,
the string to sign and the Authorization header must match the suite's files byte for byte."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cpfmap.http.signing import AwsCredentials, canonical_request, sigv4_headers, string_to_sign

SUITE = Path(__file__).parent / "data" / "aws4_testsuite"
CASES = sorted(p.with_suffix("") for p in SUITE.rglob("*.req"))
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def read(case: Path, suffix: str) -> str:
    return case.with_suffix(suffix).read_text(encoding="utf-8").replace("\r\n", "\n")


def parse(raw: str) -> tuple[str, str, list, bytes]:
    """A raw HTTP request of the suite: method, path, headers (folded lines joined), body."""
    head, _, body = raw.partition("\n\n")
    first, *lines = head.split("\n")
    method, rest = first.split(" ", 1)
    headers: list[tuple[str, str]] = []
    for line in filter(None, lines):
        if line[0] in " \t":
            headers[-1] = (headers[-1][0], headers[-1][1] + " " + line.strip())
        else:
            name, _, value = line.partition(":")
            headers.append((name, value))
    return method, rest.rsplit(" ", 1)[0], headers, body.encode("utf-8")


def test_the_suite_is_there():
    assert len(CASES) >= 30 and (SUITE / "LICENSE").is_file() and (SUITE / "NOTICE").is_file()


@pytest.mark.parametrize("case", CASES, ids=[str(c.relative_to(SUITE).parent) for c in CASES])
def test_aws_sigv4_suite(case: Path):
    method, path, headers, body = parse(read(case, ".req"))
    token = re.search(r"^x-amz-security-token:(.*)$", read(case, ".creq"), re.M)
    creds = AwsCredentials("AKIDEXAMPLE", SECRET, "us-east-1", "service", token.group(1) if token else "")
    date = next(v for k, v in headers if k.lower() == "x-amz-date")
    given = [(k, v) for k, v in headers if k.lower() not in ("x-amz-date", "x-amz-security-token")]
    host = next(v for k, v in headers if k.lower() == "host")
    url = "https://" + host + path
    added = sigv4_headers(method, url, given, body, creds, date)
    creq, _ = canonical_request(method, url, given + added[:-1], body)
    assert creq == read(case, ".creq")
    assert string_to_sign(date, f"{date[:8]}/us-east-1/service/aws4_request", creq) == read(case, ".sts")
    assert dict(added)["Authorization"] == read(case, ".authz")
