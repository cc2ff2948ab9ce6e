//! Headless Chromium driven through chromedriver's W3C WebDriver API (Debian packages
//! `chromium` and `chromium-driver`; CI installs them). A missing program fails the test.

use super::free_port;
use fantoccini::{Client, ClientBuilder, Locator};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A chromedriver process and one headless browser session through it; both end on drop.
pub struct HeadlessChromium {
    driver: Child,
    pub client: Client,
}

impl HeadlessChromium {
    pub async fn start() -> HeadlessChromium {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver must be installed (apt-get install chromium chromium-driver)");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                // No sandbox: CI runs as root in a container, where Chromium's sandbox cannot start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000"]
            }),
        );
        let webdriver = format!("http://127.0.0.1:{port}");
        let mut last_error = String::new();
        for _ in 0..100 {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&webdriver)
                .await
            {
                Ok(client) => return HeadlessChromium { driver, client },
                Err(e) => last_error = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no browser session through chromedriver on port {port}: {last_error}");
    }
}

/// What a user does on a page; each waits for its element to appear first.
impl HeadlessChromium {
    pub async fn click(&self, locator: Locator<'_>) {
        let element = self.client.wait().for_element(locator).await.unwrap();
        element.click().await.unwrap();
    }

    pub async fn type_into(&self, locator: Locator<'_>, text: &str) {
        let element = self.client.wait().for_element(locator).await.unwrap();
        element.send_keys(text).await.unwrap();
    }

    pub async fn text_of(&self, locator: Locator<'_>) -> String {
        let element = self.client.wait().for_element(locator).await.unwrap();
        element.text().await.unwrap()
    }
}

impl HeadlessChromium {
    /// Ends the browser session (and with it the browser), then chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for HeadlessChromium {
    fn drop(&mut self) {
        // Killing chromedriver ends the browser it started.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
