"""What a run leaves behind for people: the run record (JSON and markdown), the timeline
picture, and allure results.
"""
