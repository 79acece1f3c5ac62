"""The kbqa web UI (Streamlit): `kbqa ui`, or `streamlit run webui_st.py` with KBQA_API_URL pointing at the API.

It talks to the backend only through the REST API (kbqa_client); nothing here imports the backend package.
"""

from __future__ import annotations

import streamlit as st

from kbqa_client import ApiError
from webui.citations import SOURCE_PAGE_PATH
from webui.common import get_api, refresh_status
from webui.i18n import LANGUAGES, default_language, t

st.set_page_config(page_title="kbqa", page_icon=":material/forum:", layout="wide")
st.session_state.setdefault("lang", default_language())


def sidebar_status() -> None:
    """API and LLM state at a glance; the pages say what to do when either is down."""
    api = get_api()
    try:
        llm = refresh_status(api)["llm"]
    except ApiError:
        st.sidebar.caption(f":red[●] {api.base_url}")
        return
    if not llm["reachable"]:
        llm_line = f":red[●] {t('status.llm_down')}"
    elif not llm["serves_model"]:
        llm_line = f":orange[●] {t('status.llm_model_missing', model=llm['model'])}"
    else:
        llm_line = f":green[●] {t('status.llm_ok', model=llm['model'])}"
    st.sidebar.caption(f":green[●] {t('status.api_ok')}  \n{llm_line}")


pages = [
    st.Page("webui/pages/chat.py", title=t("nav.chat"), icon=":material/chat:", url_path="chat", default=True),
    st.Page("webui/pages/knowledge_bases.py", title=t("nav.kbs"), icon=":material/library_books:", url_path="kbs"),
    st.Page(
        "webui/pages/source.py",
        title=t("nav.source"),
        icon=":material/article:",
        url_path=SOURCE_PAGE_PATH,
        visibility="hidden",
    ),
]
page = st.navigation(pages)
with st.sidebar:
    st.segmented_control(t("lang.label"), list(LANGUAGES), key="lang", required=True, format_func=LANGUAGES.get)
    sidebar_status()
page.run()
