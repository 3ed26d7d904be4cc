"""A real WebRTC offer (local.testing.offer) passes the gateway's SDP validation."""

from __future__ import annotations

from local.testing.offer import OfferPeer
from realtime_gateway.gateway.offer import check_offer


def test_aiortc_offer_passes_the_gateway_check():
    with OfferPeer() as peer:
        check_offer(peer.offer)
        assert peer.offer.startswith("v=0")
        assert "m=audio " in peer.offer and "m=application " in peer.offer
