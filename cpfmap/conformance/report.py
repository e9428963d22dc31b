"""The verdict: a table of workflows and checks, each failure with request, reply and what
was expected; JUnit XML on demand."""
from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from cpfmap.conformance.ras import Check
from cpfmap.redact import Redactor


def verdict(checks: list[Check]) -> bool:
    return all(c.ok for c in checks)


def summary(workflow: str, checks: list[Check]) -> str:
    """One line for a workflow: PASS, FAIL or SKIP and its check count."""
    group = [c for c in checks if c.workflow == workflow]
    bad = [c for c in group if not c.ok]
    status = "SKIP" if all(c.skipped for c in group) else ("FAIL" if bad else "PASS")
    return f"{status:4}  {workflow}  ({len(group) - len(bad)}/{len(group)} checks)"


def table(checks: list[Check]) -> str:
    lines = []
    for workflow in dict.fromkeys(c.workflow for c in checks):
        lines.append(summary(workflow, checks))
        for check in (c for c in checks if c.workflow == workflow):
            if check.skipped:
                lines.append(f"      SKIP  {check.detail}")
            elif not check.ok:
                lines.extend(_failure(check))
            elif check.left:
                lines.append(f"      LEFT  {check.name[len('left behind: '):]}: {check.detail}")
            elif workflow == "cleanup":
                lines.append(f"      DONE  {check.name}")
            elif check.name.startswith("every reply within") and check.detail:
                lines.append(f"      TIME  {check.detail}: {check.name}")
    failed = sum(1 for c in checks if not c.ok)
    lines.append(f"{'FAILED' if failed else 'PASSED'}: {len(checks) - failed} passed, {failed} failed")
    return "\n".join(lines) + "\n"


def _failure(check: Check) -> list[str]:
    out = [f"      FAIL  {check.name}: {check.detail}"]
    if check.request is not None:
        out.append(f"            request:  {_short(check.request)}")
    if check.reply is not None:
        out.append(f"            reply:    {_short(check.reply)}")
    if check.expected:
        out.append(f"            expected: {check.expected}")
    return out


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) < 300 else text[:297] + "..."


def junit(checks: list[Check], path: str | Path) -> None:
    suites = ET.Element("testsuites", name="cpfmap conformance")
    for workflow in dict.fromkeys(c.workflow for c in checks):
        group = [c for c in checks if c.workflow == workflow]
        suite = ET.SubElement(suites, "testsuite", name=workflow, tests=str(len(group)),
                              failures=str(sum(1 for c in group if not c.ok)),
                              skipped=str(sum(1 for c in group if c.skipped)))
        for check in group:
            case = ET.SubElement(suite, "testcase", classname=f"conformance.{workflow}", name=check.name)
            if check.skipped:
                ET.SubElement(case, "skipped", message=check.detail)
            elif not check.ok:
                failure = ET.SubElement(case, "failure", message=check.detail)
                failure.text = "\n".join(_failure(check))
    ET.ElementTree(suites).write(str(path), encoding="utf-8", xml_declaration=True)


def scrubbed(checks: list[Check], redactor: Redactor) -> list[Check]:
    """The checks with every secret masked, before anything is shown or shortened."""
    return [dataclasses.replace(c, name=redactor(c.name), detail=redactor(c.detail), expected=redactor(c.expected),
                                request=redactor.scrub(c.request), reply=redactor.scrub(c.reply)) for c in checks]
