import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

/** htmx 2, served by pgkeep itself from its own dependency (no CDN). Read once, on first use. */
let htmx: Buffer | undefined;
export function htmxScript(): Buffer {
  htmx ??= readFileSync(createRequire(import.meta.url).resolve('htmx.org/dist/htmx.min.js'));
  return htmx;
}

/** The dashboard's own script: copy buttons (no inline script, so the CSP can forbid them). */
export const DASHBOARD_JS = `let opener;
const closeDialog = () => {
  const modal = document.getElementById('modal');
  if (!modal || !modal.firstChild) return false;
  modal.replaceChildren();
  if (opener) opener.focus();
  return true;
};
document.addEventListener('htmx:beforeRequest', (event) => {
  if (event.detail.target && event.detail.target.id === 'modal') opener = event.detail.elt;
});
// the dialog takes the focus (the browser's autofocus does not apply to swapped-in content once something has focus)
document.addEventListener('htmx:afterSettle', (event) => {
  if (event.detail.target && event.detail.target.id === 'modal') {
    const first = event.detail.target.querySelector('[autofocus]');
    if (first) first.focus();
  }
});
document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && closeDialog()) event.preventDefault();
});
document.addEventListener('click', async (event) => {
  if (event.target.closest('[data-close-dialog]') && closeDialog()) return event.preventDefault();
  if (event.target.classList && event.target.classList.contains('backdrop') && closeDialog()) return;
  const button = event.target.closest('[data-copy]');
  if (!button) return;
  const text = document.getElementById(button.dataset.copy).textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = 'Copied';
  } catch {
    const range = document.createRange();
    range.selectNodeContents(document.getElementById(button.dataset.copy));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    button.textContent = 'Selected: press Ctrl+C';
  }
});
`;

// Colours meet WCAG AA contrast on their backgrounds; the verdict is also written out, never colour alone.
export const DASHBOARD_CSS = `:root{--fg:#1b1f24;--muted:#57606a;--bg:#f6f8fa;--card:#fff;--line:#d0d7de;--accent:#0a58ca;--green:#1a7f37;--amber:#9a6700;--red:#cf222e}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--accent)}
.skip{position:absolute;left:-999px}.skip:focus{left:8px;top:8px;background:#fff;padding:4px 8px;z-index:10}
header nav{display:flex;flex-wrap:wrap;gap:4px 16px;align-items:center;padding:10px 16px;background:#24292f;color:#fff}
header nav a,header nav .link{color:#fff;text-decoration:none;padding:4px 2px}
header nav a[aria-current=page]{border-bottom:2px solid #fff}
.brand{font-size:18px;margin-right:8px}.spacer{flex:1}
main{padding:16px;max-width:1200px;margin:0 auto}
h1{font-size:24px;margin:8px 0 16px}h2{font-size:19px;margin:20px 0 8px}
.counts{display:flex;flex-wrap:wrap;gap:8px 12px;align-items:center;margin:0 0 8px}.count{padding:4px 12px;border-radius:6px;border:1px solid var(--line);background:var(--card);text-decoration:none;color:var(--fg)}.count strong{font-size:20px}.count.red strong{color:var(--red)}.count.amber strong{color:var(--amber)}.count.green strong{color:var(--green)}.count[aria-current]{outline:2px solid var(--accent)}
.fleet-filters{margin:0 0 8px}
main:has(#overview){max-width:none}
.rows{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,760px),1fr));gap:0 12px}
.card.row{display:grid;grid-template-columns:minmax(100px,11em) minmax(0,1fr) auto;align-items:center;gap:0 8px;padding:1px 6px;border-radius:0;border-width:0 0 1px 6px;font-size:12px;line-height:17px}
.card.row .facts{display:flex;gap:0 12px;overflow:hidden;white-space:nowrap;text-overflow:ellipsis;min-width:0}
.card.row h2{margin:0;font-size:13px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;justify-content:flex-start}.card.row .badge{font-size:10px;padding:0 5px}
.card.row dl{display:flex;gap:0 12px}.card.row dl>div{display:flex;gap:4px;white-space:nowrap}.card.row .id{color:var(--muted)}
.card.row .actions{margin:0;gap:4px}.card.row .actions .button{font-size:12px;padding:1px 8px;min-height:0}
.card.row .reasons{margin:0;padding:0;list-style:none;display:flex;gap:0 8px;font-weight:600}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,360px),1fr));gap:16px}
.card{background:var(--card);border:1px solid var(--line);border-left:8px solid var(--line);border-radius:6px;padding:12px 16px}
.card.green{border-left-color:var(--green)}.card.amber{border-left-color:var(--amber)}.card.red{border-left-color:var(--red)}
.card h2{margin:0 0 8px;display:flex;justify-content:space-between;align-items:center;gap:8px}
.badge{font-size:13px;font-weight:600;padding:2px 8px;border-radius:12px;color:#fff;white-space:nowrap}
.badge.green{background:var(--green)}.badge.amber{background:var(--amber)}.badge.red{background:var(--red)}.badge.pin{background:#6e40c9}
.reasons{margin:0 0 8px;padding-left:20px;color:var(--red)}.card.amber .reasons{color:var(--amber)}
.ok-line{color:var(--green);margin:0 0 8px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0}dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}
.actions{display:flex;flex-wrap:wrap;gap:8px;margin:12px 0 0}.row-actions{display:flex;flex-wrap:wrap;gap:6px}.row-actions .button{font-size:14px;padding:4px 10px;white-space:nowrap}
.button,button{display:inline-block;font:inherit;font-size:15px;padding:6px 14px;border-radius:6px;border:1px solid var(--accent);background:var(--accent);color:#fff;text-decoration:none;cursor:pointer;min-height:36px}
.button.secondary,button.secondary{background:#fff;color:var(--accent)}
button.link{background:none;border:none;padding:4px 2px;min-height:0;text-decoration:underline}
form.inline{display:inline}
.muted{color:var(--muted)}.pass{color:var(--green)}.fail,.error{color:var(--red)}
.filters{display:flex;flex-wrap:wrap;gap:8px 16px;align-items:end;margin:0 0 12px}
.filters label{display:flex;flex-direction:column;font-size:14px;color:var(--muted)}
input,select{font:inherit;padding:5px 8px;border:1px solid var(--muted);border-radius:6px;min-height:36px;background:#fff;color:var(--fg)}
.filters label:has(input[type=checkbox]){flex-direction:row;align-items:center;gap:6px}
.table-wrap{overflow-x:auto;background:var(--card);border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line);vertical-align:top}
thead th{background:var(--bg);white-space:nowrap}.num{text-align:right;white-space:nowrap}
tbody th{font-weight:600;white-space:nowrap}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,420px),1fr));gap:12px}.charts h2{grid-column:1/-1;margin-bottom:0}
.chart{margin:0;background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px}
.chart figcaption{font-size:14px;color:var(--muted)}
.chart svg{width:100%;height:auto;display:block}.chart text{font-size:11px;fill:var(--muted)}
.chart .axis{stroke:var(--line)}polyline.size,polyline.duration{fill:none;stroke-width:2}
polyline.size{stroke:var(--accent)}circle.size{fill:var(--accent)}polyline.duration{stroke:#8250df}circle.duration{fill:#8250df}
.copy{display:flex;gap:8px;align-items:center;flex-wrap:wrap;margin-top:4px}
.copy code{background:#eaeef2;padding:4px 8px;border-radius:4px;font-size:13px;overflow-wrap:anywhere}
.backdrop{position:fixed;inset:0;background:rgba(27,31,36,.5);display:flex;align-items:flex-start;justify-content:center;padding:10vh 12px;z-index:20}
dialog.confirm{position:static;max-width:560px;border:1px solid var(--line);border-radius:8px;padding:16px 20px;box-shadow:0 8px 24px rgba(0,0,0,.2)}
.login{display:flex;flex-direction:column;gap:8px;max-width:360px}
progress{width:120px;vertical-align:middle}
@media (max-width:600px){main{padding:10px}th,td{padding:5px 6px}dl{grid-template-columns:1fr}dt{margin-top:4px}
#backups thead{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
#backups,#backups tbody,#backups tr,#backups tbody th,#backups td{display:block}
#backups tr{border-bottom:2px solid var(--line);padding:4px 0}#backups tbody th,#backups td{border:0;white-space:normal}
#backups td{position:relative;padding-left:calc(7.5em + 14px);text-align:left;overflow-wrap:anywhere}#backups td::before{content:attr(data-label);position:absolute;left:6px;width:7.5em;color:var(--muted)}
#backups td:empty{display:none}.chart text{font-size:18px}}
`;
