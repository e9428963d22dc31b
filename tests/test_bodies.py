"""Reply bodies by content type (cpfmap/http/bodies.py): data-driven from tests/data/reply_bodies.yaml
(content type + body -> the data mappings read, or the error)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cpfmap.http.bodies import BodyError, decode
from cpfmap.http.transport import HttpResponse

CASES = yaml.safe_load((Path(__file__).parent / "data" / "reply_bodies.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_reply_bodies(case):
    body = case["body"].encode("utf-8") if isinstance(case["body"], str) else case["body"]
    if "error" in case:
        with pytest.raises(BodyError, match=case["error"]):
            decode(body, case["type"], case.get("lists", ()))
    else:
        assert decode(body, case["type"], case.get("lists", ())) == case["expect"]


def test_a_response_reads_its_body_by_its_content_type_and_lists():
    reply = HttpResponse(200, (("Content-Type", "text/xml;charset=UTF-8"),), b"<R><item>a</item></R>",
                         xml_lists=("item",))
    assert reply.data() == {"R": {"item": ["a"]}}


def test_deep_xml_is_refused_before_it_exhausts_the_stack():
    with pytest.raises(BodyError, match="nested deeper"):
        decode(b"<a>" * 150 + b"</a>" * 150, "application/xml")


def test_the_reference_example_reads_as_shown():
    from cpfmap.http.bodies import EXAMPLE_DATA, EXAMPLE_LISTS, EXAMPLE_XML
    from cpfmap.language.expressions import Expression
    data = decode(EXAMPLE_XML.encode(), "text/xml", EXAMPLE_LISTS)
    assert data == EXAMPLE_DATA
    path = "DescribeInstancesResponse.reservationSet.item[].instancesSet.item[].instanceId"
    assert Expression.compile(path, "t").search(data) == ["i-0abc"]


def test_an_unreadable_body_is_shown_with_its_markup_collapsed_up_to_the_useful_part():
    from cpfmap.errors import BackendError
    from cpfmap.runtime.reading import body_of
    page = ("proxy error <html><head><style>" + "x" * 150 + "</style></head><body><h1>Service Unavailable</h1>"
            "<p>maintenance until 14:00</p></body></html>").encode()
    with pytest.raises(BackendError) as caught:
        body_of(HttpResponse(200, (("Content-Type", "application/octet-stream"),), page))
    assert "not JSON" in caught.value.message and "Service Unavailable maintenance until 14:00" in caught.value.message


def test_an_xml_error_body_gives_its_code_to_error_message():
    from cpfmap.language.expressions import Expression
    from cpfmap.runtime.session import message_of
    body = (b'<?xml version="1.0"?><Response><Errors><Error><Code>InvalidInstanceID.NotFound</Code>'
            b"<Message>The instance ID 'i-1' does not exist</Message></Error></Errors></Response>")
    reply = HttpResponse(400, (("Content-Type", "text/xml"),), body, "Bad Request", xml_lists=("Error",))
    expression = Expression.compile("(Response || ErrorResponse).Errors.Error[0] | join(': ', [Code, Message])", "t")
    assert message_of(reply, expression) == "InvalidInstanceID.NotFound: The instance ID 'i-1' does not exist"


@pytest.mark.parametrize("content_type, body, message", [
    ("text/plain; charset=utf-8", b"VM 7 is locked\n", "VM 7 is locked"),
    ("text/html", b"<html><body><h1>500</h1></body></html>", "Internal Server Error"),
])
def test_a_plain_text_refusal_is_the_message_an_html_page_is_not(content_type, body, message):
    from cpfmap.runtime.session import message_of
    reply = HttpResponse(500, (("Content-Type", content_type),), body, "Internal Server Error")
    assert message_of(reply, None) == message
