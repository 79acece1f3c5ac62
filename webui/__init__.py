"""The Streamlit web UI. It reaches the backend only through the REST API (webui.api), never by importing `app`."""
