// The app's frame: which screen shows, the one place PHI lives in the UI (`views`), and
// the wipe that removes it all when the account locks (before the OS can snapshot the
// window for its app switcher).
import { api, isCommandError, type CommandError, type SessionView } from "./api";
import { clear, el } from "./dom";

/** Everything the UI holds that could be PHI: the page's content, the records loaded, and
 * what must be let go of besides the page (an open PDF's renderer). */
export const views = {
  records: new Map<string, unknown>(),
  releases: new Set<() => void>(),
};

/** Set by each screen: what to show for a session. */
type Router = (session: SessionView) => void | Promise<void>;
let route: Router = () => {};

export function setRouter(router: Router): void {
  route = router;
}

/** The main region (cleared on every screen change and on lock). */
export function main(): HTMLElement {
  const region = document.getElementById("main");
  if (!region) throw new Error("the page has no #main region (index.html)");
  return region;
}

/** Removes every view of records: page content, banner, dialogs, loaded data. */
export function wipe(): void {
  clear(main());
  const banner = document.getElementById("banner");
  if (banner) clear(banner);
  for (const dialog of Array.from(document.querySelectorAll("dialog"))) dialog.remove();
  views.records.clear();
  for (const release of views.releases) release();
  views.releases.clear();
  // Any selection of record text goes too.
  window.getSelection()?.removeAllRanges();
}

/** Asks the core where things stand and shows that screen (resolves once it is shown). */
export async function refresh(): Promise<void> {
  try {
    await route(await api.session());
  } catch (e) {
    showError(e);
  }
}

/** Shows a screen: the old one is wiped first, focus moves to the new heading. */
export function show(screen: HTMLElement): void {
  wipe();
  main().append(screen);
  const heading = screen.querySelector<HTMLElement>("h1, h2");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus();
  }
}

/** The message area at the top of the page (offline banner, errors, confirmations). */
export function announce(text: string, kind: "info" | "error" | "offline" = "info"): void {
  const banner = document.getElementById("banner");
  if (!banner) return;
  clear(banner);
  banner.append(el("p", { class: `notice ${kind}` }, text));
}

/** Handles a command's failure: the screen it calls for, or its message. */
export function showError(e: unknown): CommandError {
  const error: CommandError = isCommandError(e) ? e : { next: "fix", step: null, message: String(e) };
  switch (error.next) {
    case "locked":
    case "sign-in":
    case "wiped":
      void refresh().then(() => {
        announce(error.message, "error");
      });
      break;
    case "offline":
      announce(`${error.message} You can keep using what is on this device.`, "offline");
      break;
    default:
      announce(error.message, "error");
  }
  return error;
}
