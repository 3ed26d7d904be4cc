"""Stage 2, the Azure OpenAI client: identity, client secrets, the SDP post, hang-up."""
