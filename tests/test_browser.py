"""The viewer in a real headless Chromium (Dash's dash_duo), on a course synced by real rsync.

Screenshots go to tests/screenshots/; with UPDATE_SCREENSHOTS=1 to docs/screenshots/,
where the README shows them.
"""

import os
import re
import shutil
import time

import pytest
from conftest import ACCESS_TOKEN, ROOT, open_page, private_access_db, sync, write_json
from demo_course import execute_result, grade_cell, notebook
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from test_viewer import course, settings_for  # noqa: F401  (the session's synced course)

import progress_viewer as pv
from progress_views import activity, moment, problems, version
from progress_views.data import OWN_FILE
from progress_views.widgets import PageIds

pytestmark = pytest.mark.skipif(
    not shutil.which("chromedriver"), reason="chromium-driver is not installed (./run test does)"
)
SCREENSHOTS = os.path.join(
    ROOT, "docs" if os.environ.get("UPDATE_SCREENSHOTS") == "1" else "tests", "screenshots"
)


def screenshot(dash_duo, name):
    os.makedirs(SCREENSHOTS, exist_ok=True)
    dash_duo.driver.set_window_size(1300, 900)
    dash_duo.driver.save_screenshot(os.path.join(SCREENSHOTS, name))


def element_screenshot(dash_duo, selector, name):
    os.makedirs(SCREENSHOTS, exist_ok=True)
    dash_duo.driver.set_window_size(1300, 900)
    time.sleep(1)  # the graphs take the new width
    element = dash_duo.find_element(selector)
    dash_duo.driver.execute_script("arguments[0].scrollIntoView()", element)
    element.screenshot(os.path.join(SCREENSHOTS, name))


def texts(dash_duo, selector):
    """The text of every element matching `selector`, read in one step (a graph may
    redraw meanwhile)."""
    script = "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)"
    return dash_duo.driver.execute_script(script, selector)


def tick_labels(dash_duo, graph=activity.Ids.graph):
    return texts(dash_duo, f"#{graph} .ytick text")


def wait_until(condition, timeout=15):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def type_into(dash_duo, component_id, text):
    box = dash_duo.find_element(f"#{component_id}")
    box.send_keys(Keys.CONTROL, "a")  # what a person does: select all, type over it
    box.send_keys(text + Keys.ENTER)


def test_page_shows_the_class_and_the_password_reveals_names(dash_duo, course):  # noqa: F811
    app = pv.create_app(settings_for(course))
    open_page(dash_duo, app)
    dash_duo.wait_for_text_to_equal(f"#{activity.Ids.n_rows}", "24 rows", timeout=20)
    dash_duo.wait_for_element(f"#{activity.Ids.graph} .ytick text", timeout=20)
    wait_until(lambda: len(tick_labels(dash_duo)) == 24)
    assert all(re.fullmatch(r"pl0\d/pl0\d\.ipynb student \d+", t) for t in tick_labels(dash_duo))
    assert dash_duo.find_element(f"#{PageIds.password}").get_attribute("type") == "password"
    element_screenshot(dash_duo, f"#{activity.Ids.section}", "activity.png")

    type_into(dash_duo, PageIds.password, "guess")
    dash_duo.wait_for_text_to_equal(f"#{activity.Ids.message}", "wrong password", timeout=10)
    assert all(" student " in label for label in tick_labels(dash_duo))

    type_into(dash_duo, PageIds.password, "s3cret")
    wait_until(lambda: any("Alice" in label for label in tick_labels(dash_duo)))
    assert all(" student " not in label for label in tick_labels(dash_duo))
    element_screenshot(dash_duo, f"#{activity.Ids.section}", "activity_names.png")


def test_suggested_group_filters_and_bad_regexp_is_a_message(dash_duo, course):  # noqa: F811
    app = pv.create_app(settings_for(course))
    open_page(dash_duo, app)
    dash_duo.wait_for_text_to_equal(f"#{activity.Ids.n_rows}", "24 rows", timeout=20)
    dash_duo.find_element(f"#{activity.Ids.groups} summary").click()
    group = r"^pl02/[^/]+$"
    dash_duo.wait_for_contains_text(f"#{activity.Ids.path_re_options}", group, timeout=10)
    for option in dash_duo.find_elements(f"#{activity.Ids.path_re_options} label"):
        if option.text.startswith(group):
            option.click()
    dash_duo.wait_for_text_to_equal(f"#{activity.Ids.n_rows}", "12 rows", timeout=10)
    wait_until(lambda: len(tick_labels(dash_duo)) == 12)
    assert all(label.startswith("pl02/pl02.ipynb") for label in tick_labels(dash_duo))

    type_into(dash_duo, activity.Ids.path_re, "pl01/(")
    dash_duo.wait_for_contains_text(f"#{activity.Ids.message}", "bad path regexp", timeout=10)
    assert dash_duo.find_element(f"#{activity.Ids.n_rows}").text == "0 rows"
    assert dash_duo.get_logs() == []  # no failed callback (a 500) behind the message


def test_clicking_a_marker_gives_a_link_to_the_version(dash_duo, course):  # noqa: F811
    settings = settings_for(course, URL_TEMPLATE="http://hub.example/notebooks/{filename}")
    open_page(dash_duo, pv.create_app(settings))
    type_into(dash_duo, PageIds.password, "s3cret")
    wait_until(lambda: any("Alice" in label for label in tick_labels(dash_duo)))
    dash_duo.driver.set_window_size(1300, 1400)
    time.sleep(1)
    point = dash_duo.find_elements(f"#{activity.Ids.graph} .scatterlayer .point")[0]
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", point)
    actions = ActionChains(dash_duo.driver).move_to_element(point).pause(0.5)
    actions.click().perform()
    dash_duo.wait_for_element(f"#{activity.Ids.link} a", timeout=10)
    href = dash_duo.find_element(f"#{activity.Ids.link} a").get_attribute("href")
    assert href.startswith("http://hub.example/notebooks/class/u0") and href.endswith(".ipynb")


def test_heatmap_slider_version_view_and_csv(dash_duo, course):  # noqa: F811
    """The heatmap renders, the slider moves M, a click opens the version, CSV downloads."""
    open_page(dash_duo, pv.create_app(settings_for(course)))
    dash_duo.driver.set_window_size(1300, 1400)
    heatmap = f"#{problems.Ids.heatmap}"
    dash_duo.wait_for_element(f"{heatmap} .heatmaplayer", timeout=20)
    wait_until(lambda: len(tick_labels(dash_duo, problems.Ids.heatmap)) == 12)
    rows = tick_labels(dash_duo, problems.Ids.heatmap)
    assert sorted(rows, key=lambda r: int(r.split()[1])) == [f"student {n}" for n in range(1, 13)]
    dash_duo.driver.execute_script("arguments[0].scrollIntoView()", dash_duo.find_element(heatmap))
    screenshot(dash_duo, "heatmap.png")
    element_screenshot(dash_duo, f"#{problems.Ids.progress}", "progress.png")

    label = dash_duo.find_element(f"#{moment.Ids.label}").text
    handle = dash_duo.find_element(f"#{moment.Ids.slider} [role=slider]")
    handle.click()
    handle.send_keys(Keys.HOME)
    wait_until(lambda: dash_duo.find_element(f"#{moment.Ids.label}").text != label)
    wait_until(lambda: "replayed" in dash_duo.find_element(f"#{moment.Ids.label}").text)

    dash_duo.find_element(f"#{problems.Ids.download_button}").click()
    folder = dash_duo.download_path
    wait_until(lambda: any(name.endswith(".csv") for name in os.listdir(folder)))
    (name,) = [n for n in os.listdir(folder) if n.endswith(".csv")]
    assert re.fullmatch(r"heatmap_pl01_pl01\.ipynb_at_\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.csv", name)
    with open(os.path.join(folder, name)) as stream:
        lines = stream.read().splitlines()
    assert lines[0].startswith("moment,student,version saved,p1_1")

    dash_duo.find_element(f"#{problems.Ids.stuck_download_button}").click()
    wait_until(lambda: len([n for n in os.listdir(folder) if n.endswith(".csv")]) == 2)
    (exported,) = [n for n in os.listdir(folder) if n.endswith(".csv") and n != name]
    assert exported.startswith("stuck_at_")
    with open(os.path.join(folder, exported)) as stream:
        assert stream.readline().strip() == "moment,student,assignment,problem,kind,since,minutes"

    dash_duo.find_element(f"#{moment.Ids.live}").click()
    wait_until(lambda: "M = now" in dash_duo.find_element(f"#{moment.Ids.label}").text)
    type_into(dash_duo, PageIds.password, "s3cret")
    wait_until(lambda: any(" [" in r for r in tick_labels(dash_duo, problems.Ids.heatmap)))
    cell = dash_duo.find_element(f"{heatmap} .nsewdrag")
    ActionChains(dash_duo.driver).move_to_element_with_offset(cell, 0, 0).pause(
        0.5
    ).click().perform()
    dash_duo.wait_for_contains_text(f"#{version.Ids.view}", "saved", timeout=15)
    assert "p1_" in dash_duo.find_element(f"#{version.Ids.view}").text


def test_file_names_with_markup_show_literally_and_links_are_encoded(dash_duo, tmp_path):
    """A student's `<b>bold<i> "q"#50%.ipynb` is text on the page, never markup."""
    name = '<b>bold<i> "q"#50%.ipynb'
    (tmp_path / "users.csv").write_text("uid,notebooks\nx,hoge/x\n")
    write_json(tmp_path / "hoge/x" / name, notebook([grade_cell("1", "q", [execute_result("1")])]))
    sync(tmp_path)
    settings = {
        **pv.DEFAULTS,
        "SYNC_SQLITE": str(tmp_path / "sync.sqlite"),
        "USERS_CSV": str(tmp_path / "users.csv"),
        "PASSWD": "pw",
        "URL_TEMPLATE": "http://hub.example/n/{filename}",
        "ACCESS_TOKEN": ACCESS_TOKEN,
        "ACCESS_DB": private_access_db(),
    }
    open_page(dash_duo, pv.create_app(settings))
    # a file only one student has is not named without the password (issue 8 review F2)
    wait_until(lambda: tick_labels(dash_duo) == [f"{OWN_FILE} student 1"])
    type_into(dash_duo, PageIds.password, "pw")
    wait_until(lambda: tick_labels(dash_duo) == [f"{name} x"])
    assert not dash_duo.find_elements(f"#{activity.Ids.graph} .ytick b")
    time.sleep(1)
    point = dash_duo.find_elements(f"#{activity.Ids.graph} .scatterlayer .point")[0]
    ActionChains(dash_duo.driver).move_to_element(point).pause(0.5).click().perform()
    dash_duo.wait_for_element(f"#{activity.Ids.link} a", timeout=10)
    link = dash_duo.find_element(f"#{activity.Ids.link} a")
    assert link.get_attribute("href") == (
        "http://hub.example/n/hoge/x/%3Cb%3Ebold%3Ci%3E%20%22q%22%2350%25.ipynb"
    )
    assert link.text == f"open hoge/x/{name}"
