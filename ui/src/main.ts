// Start-up: listen for locks (wipe first, then the lock screen), report activity to the
// core's idle timer, route copies through the shell, and show the screen the session
// calls for.
import "./style.css";
import { api, type SessionView } from "./api";
import { refresh, setRouter, showError, wipe } from "./app";
import { guardCopies } from "./clipboard";
import { forgetLock, noteLock } from "./lock";
import { homeScreen } from "./screens/home";
import { lockScreen, signInScreen, wipedScreen } from "./screens/session";

async function route(session: SessionView): Promise<void> {
  if (session.state !== "locked" && session.state !== "reauth-required") forgetLock();
  switch (session.state) {
    case "unlocked":
      await homeScreen(session).catch(showError);
      break;
    case "locked":
      lockScreen(session);
      break;
    case "wiped":
      wipedScreen(session);
      break;
    default:
      signInScreen(session);
  }
}

/** Input restarts the core's idle timer; told at most every 5 seconds. */
function reportActivity(): void {
  let last = 0;
  const seen = () => {
    const now = Date.now();
    if (now - last < 5000) return;
    last = now;
    void api.userActive().catch(() => {});
  };
  for (const type of ["keydown", "pointerdown", "wheel", "touchstart"]) {
    document.addEventListener(type, seen, { passive: true, capture: true });
  }
}

/**
 * WebKitGTK's software drawing paths (compositing or the DMA-BUF renderer turned off, as
 * people do for some GPU drivers) leave a page that has drawn nothing for about 45 seconds
 * blank and deaf to input: a WebKit bug, reproduced under Xvfb. A one-pixel change every
 * 15 seconds keeps the page drawing; elsewhere it costs next to nothing.
 */
function keepDrawing(): void {
  const dot = document.createElement("div");
  dot.setAttribute("aria-hidden", "true");
  dot.className = "keep-drawing";
  document.body.append(dot);
  let on = false;
  setInterval(() => {
    on = !on;
    dot.classList.toggle("on", on);
  }, 15_000);
}

async function start(): Promise<void> {
  setRouter(route);
  await api.watchLock((notice) => {
    // Synchronously, before anything else runs: no record stays on the page.
    wipe();
    noteLock(notice.reason);
    void refresh();
  });
  // Hidden (minimised, another app in front): nothing of the records stays rendered.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") wipe();
    else void refresh();
  });
  reportActivity();
  keepDrawing();
  guardCopies();
  await refresh();
}

void start();
