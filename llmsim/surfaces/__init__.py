"""API surfaces: each translates one provider's wire format to and from the neutral pipeline."""
