"""The Streamlit web UI. It reaches the backend only through the REST API (kbqa_client), never by importing `app`."""
