"""Streamlit pieces the pages share, one concern per module; every computation is a call into
``mlalp_core``. User errors are shown with ``st.error``/``st.warning`` (MlalpError messages are written
to be shown as they are)."""
