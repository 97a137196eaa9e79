"""The app's pages, run by app.py through st.navigation: only app.py decides what a page is
(Streamlit's legacy scan of a pages/ folder stays off: pages.common.folder_scan)."""
