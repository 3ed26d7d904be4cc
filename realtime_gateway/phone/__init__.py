"""Phone calls over SIP: the signed `realtime.call.incoming` webhook, the caller's privacy, the
decision through the limiter, and the accept / reject that follow (docs/phone.md)."""
