"""Reading the offer: raw application/sdp, the seed page's multipart field, and the 400/413/415 rules."""

import pytest
import requests
from urllib3 import encode_multipart_formdata

from realtime_gateway.errors import ApiError
from realtime_gateway.gateway.offer import MAX_OFFER_BYTES, offer_from_body

OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"


def multipart(fields: dict, files: dict | None = None) -> tuple[str, bytes]:
    if files:  # a file part, with filename and its own content type
        prepared = requests.Request("POST", "http://x/", data=fields, files=files).prepare()
        return prepared.headers["Content-Type"], prepared.body
    # Plain fields without filename: the shape a browser's FormData.append('sdp', text) sends.
    body, ctype = encode_multipart_formdata(fields)
    return ctype, body


def error_of(content_type, body) -> ApiError:
    with pytest.raises(ApiError) as info:
        offer_from_body(content_type, body)
    return info.value


def test_raw_sdp_is_returned_as_is():
    assert offer_from_body("application/sdp", OFFER.encode()) == OFFER
    assert offer_from_body("Application/SDP; charset=utf-8", OFFER.encode()) == OFFER


def test_multipart_field_sdp_as_the_seed_page_sends_it():
    ctype, body = multipart({"sdp": OFFER})
    assert offer_from_body(ctype, body) == OFFER


def test_multipart_field_sent_as_a_file_part():
    ctype, body = multipart({}, files={"sdp": ("offer.sdp", OFFER.encode(), "application/sdp")})
    assert offer_from_body(ctype, body) == OFFER


def test_multipart_without_sdp_field_is_400():
    ctype, body = multipart({"offer": OFFER})
    err = error_of(ctype, body)
    assert (err.status, err.code) == (400, "missing_sdp")


def test_multipart_without_boundary_is_400():
    assert error_of("multipart/form-data", b"x").status == 400


@pytest.mark.parametrize(
    "body,code",
    [
        (b"", "missing_sdp"),
        (b"  \r\n", "missing_sdp"),
        (b"hello", "invalid_sdp"),
        (b"v=1\r\nm=audio 9 RTP 0\r\n", "invalid_sdp"),
        (b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "invalid_sdp"),
        (b"v=0\r\n\xff\xfe", "invalid_sdp"),
    ],
)
def test_bad_offers_are_400(body, code):
    err = error_of("application/sdp", body)
    assert (err.status, err.code) == (400, code)


def test_oversize_body_is_413_and_states_the_limit():
    err = error_of("application/sdp", b"v=0\r\n" + b"a" * MAX_OFFER_BYTES)
    assert err.status == 413 and str(MAX_OFFER_BYTES) in err.message


@pytest.mark.parametrize("ctype", ["application/json", "text/plain", "", None, "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(ctype):
    assert error_of(ctype, OFFER.encode()).status == 415
