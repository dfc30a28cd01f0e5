"""The face SDK's domain: lifecycle, the camera's sessions, the authinfo cache and the flows."""
