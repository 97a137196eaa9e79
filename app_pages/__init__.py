"""The app's pages, run by app.py through st.navigation (a folder Streamlit does not scan on its
own, so only app.py decides what a page is)."""
