/**
 * The tcplat heatmap panel: the renderer's image for the dashboard's time range, variables and theme,
 * sized to the panel in device pixels, fetched through the datasource's `renderer` route (the token stays
 * on the Grafana server) and shown as a data: URL (Grafana's Content-Security-Policy allows `img-src * data:`,
 * not blob:). Loading, no-data and error states carry the renderer's own message; a button
 * mints a signed, expiring link for alert notifications.
 */
import React, { useEffect, useMemo, useState } from 'react';
import { css } from '@emotion/css';
import type { GrafanaTheme2, PanelProps } from '@grafana/data';
import { getDataSourceSrv } from '@grafana/runtime';
import { Alert, Button, IconButton, Input, Spinner, useStyles2, useTheme2 } from '@grafana/ui';
import { PLUGIN_ID, type TcplatOptions } from '../../datasource/types';
import { Cancelled, HttpFailure, proxyFetch } from '../../shared/http';
import { NO_DATA_HEADER, linkRequest, renderUrl, type MintedLink } from '../../shared/renderer';
import { chartName, chartOf, renderParams, type RenderContext } from '../render';
import type { PanelOptions } from '../types';

type Props = PanelProps<PanelOptions>;

type ImageState =
  | { status: 'loading'; src?: string; noData?: boolean }
  | { status: 'ok'; src: string; noData: boolean }
  | { status: 'error'; message: string; parameter?: string; src?: string };

/** Wait this long after the last size change before asking for a new image (panel resizing). */
const RESIZE_DEBOUNCE_MS = 200;

/** The PNG as a data: URL, which Grafana's CSP (`img-src * data:`) lets an <img> show. */
export function dataUrlOf(blob: Blob): Promise<string> {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result));
    r.onerror = () => reject(r.error ?? new Error('could not read the image'));
    r.readAsDataURL(blob.type ? blob : new Blob([blob], { type: 'image/png' }));
  });
}

function useDatasource(options: PanelOptions, replaceVariables: Props['replaceVariables']) {
  // A dashboard's datasource variable (${ds_tcplat}) in the panel's datasource option resolves here.
  const uid = options.datasource?.uid ? replaceVariables(options.datasource.uid) : undefined;
  return useMemo(() => {
    const srv = getDataSourceSrv();
    if (uid) return srv.getInstanceSettings({ ...options.datasource, uid }) ?? null;
    return srv.getList({ pluginId: PLUGIN_ID })[0] ?? null;
  }, [options.datasource, uid]);
}

/**
 * Why readers of a minted link may not open it, or null. The renderer builds links from its --public-url
 * (never from the request); one naming a loopback host, or the address Grafana's server reaches the
 * renderer at (the datasource's renderer URL, often an internal name), means that is unset or wrong.
 */
export function unreachableLinkReason(minted: string, rendererUrl: string): string | null {
  let u: URL;
  try {
    u = new URL(minted);
  } catch {
    return 'the renderer returned no absolute URL';
  }
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (host === 'localhost' || host === '::1' || /^127\./.test(host)) return `it names ${u.host}, which opens only on the renderer's own machine`;
  try {
    if (new URL(rendererUrl).host === u.host) return `it names ${u.host}, the address Grafana's server uses for the renderer, which readers usually cannot reach`;
  } catch {
    // no usable renderer URL to compare with
  }
  return null;
}

export function HeatmapPanel({ options, width, height, timeRange, timeZone, replaceVariables }: Props) {
  const theme = useTheme2();
  const styles = useStyles2(getStyles);
  const ds = useDatasource(options, replaceVariables);
  const [image, setImage] = useState<ImageState>({ status: 'loading' });
  const [link, setLink] = useState<{ status: 'idle' | 'minting' } | { status: 'ok'; link: MintedLink; copied: boolean } | { status: 'error'; message: string }>({ status: 'idle' });

  const ctx: RenderContext = {
    width,
    height,
    devicePixelRatio: typeof window !== 'undefined' ? window.devicePixelRatio || 1 : 1,
    timeRange,
    timeZone,
    isDark: theme.isDark,
    replaceVariables,
  };
  let url: string | null = null;
  let setupError: string | null = null;
  let name = 'chart';
  try {
    name = chartName(options);
    if (!ds) setupError = 'No tcplat datasource: add one (with a renderer URL) and pick it in the panel options.';
    else if (!(ds.jsonData as TcplatOptions).rendererUrl) setupError = `The datasource ${ds.name} has no renderer URL: set it in its settings.`;
    else url = renderUrl(ds.url ?? '', chartOf(options).kind, renderParams(options, ctx));
  } catch (e) {
    setupError = (e as Error).message;
  }
  const lifespans = !setupError && chartOf(options).kind === 'lifespan';

  useEffect(() => {
    if (!url || !ds) return;
    const ctl = new AbortController();
    setImage((s) => ({ status: 'loading', src: s.status !== 'error' ? s.src : undefined, noData: s.status === 'ok' ? s.noData : undefined }));
    const timer = setTimeout(async () => {
      try {
        const res = await proxyFetch<Blob>({ url, method: 'GET', responseType: 'blob' }, 'the renderer', (ds.jsonData as TcplatOptions).rendererUrl ?? '', ctl.signal);
        const src = await dataUrlOf(res.data);
        if (ctl.signal.aborted) return;
        setImage({ status: 'ok', src, noData: res.headers?.get(NO_DATA_HEADER) === 'true' });
      } catch (e) {
        if (ctl.signal.aborted || e instanceof Cancelled) return;
        const f = e as HttpFailure;
        setImage({ status: 'error', message: f.message, parameter: f.parameter });
      }
    }, RESIZE_DEBOUNCE_MS);
    return () => {
      // A newer range or size, or the panel going away: drop the request still running.
      ctl.abort();
      clearTimeout(timer);
    };
    // timeRange: a dashboard refresh gives a new range object, and a new image even for the same URL.
  }, [url, ds, timeRange]);

  const mintLink = async () => {
    if (!ds) return;
    setLink({ status: 'minting' });
    try {
      const req = linkRequest(ds.url ?? '', chartOf(options).kind, renderParams(options, ctx, true), options.linkTtl || undefined);
      const res = await proxyFetch<MintedLink>(req, 'the renderer', (ds.jsonData as TcplatOptions).rendererUrl ?? '');
      let copied = false;
      try {
        await navigator.clipboard.writeText(res.data.url);
        copied = true;
      } catch {
        copied = false;
      }
      setLink({ status: 'ok', link: res.data, copied });
    } catch (e) {
      setLink({ status: 'error', message: (e as Error).message });
    }
  };

  const unreachable = link.status === 'ok' ? unreachableLinkReason(link.link.url, (ds?.jsonData as TcplatOptions | undefined)?.rendererUrl ?? '') : null;

  if (setupError) {
    return (
      <div className={styles.wrap} data-testid="tcplat-panel-error">
        <Alert severity="warning" title="tcplat heatmap">
          {setupError}
        </Alert>
      </div>
    );
  }

  const src = image.status === 'error' ? undefined : image.src;
  return (
    <div className={styles.wrap} data-testid="tcplat-panel" data-state={image.status === 'ok' && image.noData ? 'nodata' : image.status}>
      {src && <img className={styles.img} src={src} alt={`tcplat ${name}`} data-testid="tcplat-panel-image" />}
      {image.status === 'loading' && (
        <div className={styles.loading} data-testid="tcplat-panel-loading" aria-live="polite">
          <Spinner inline /> Rendering…
        </div>
      )}
      {image.status === 'ok' && image.noData && (
        <div className={styles.badge} data-testid="tcplat-panel-nodata" role="status">
          {lifespans ? 'No closed connections in this time range for these filters (agents record lifespans with --probe-close)' : 'No data in this time range for these filters'}
        </div>
      )}
      {image.status === 'error' && (
        <div className={styles.error} data-testid="tcplat-panel-error">
          <Alert severity="error" title={image.parameter ? `The renderer refused the parameter ${image.parameter}` : `The ${name} could not be drawn`}>
            {image.message}
          </Alert>
        </div>
      )}
      <div className={styles.toolbar}>
        <Button size="sm" variant="secondary" fill="text" icon="link" tooltip="Copy a signed, expiring link to this chart for alert notifications" aria-label="Copy link for alerts" disabled={link.status === 'minting'} onClick={mintLink}>
          Alert link
        </Button>
      </div>
      {link.status === 'ok' && (
        <div className={styles.link} data-testid="tcplat-panel-link">
          <div className={styles.linkInput}>
            <Input readOnly value={link.link.url} aria-label="Signed link" onFocus={(e) => e.currentTarget.select()} />
          </div>
          <span className={styles.linkNote}>
            {link.copied ? 'Copied. ' : ''}Valid until {new Date(link.link.expires).toLocaleString()}
          </span>
          {unreachable && (
            <span className={styles.linkWarning} data-testid="tcplat-panel-link-warning">
              Readers may not open this link: {unreachable}. Set the renderer&apos;s --public-url (TCPLAT_RENDERER_PUBLIC_URL in compose).
            </span>
          )}
          <IconButton name="times" aria-label="Close link" tooltip="Close" onClick={() => setLink({ status: 'idle' })} />
        </div>
      )}
      {link.status === 'error' && (
        <div className={styles.link} data-testid="tcplat-panel-link-error">
          <span>{link.message}</span>
          <IconButton name="times" aria-label="Close link" tooltip="Close" onClick={() => setLink({ status: 'idle' })} />
        </div>
      )}
    </div>
  );
}

const getStyles = (theme: GrafanaTheme2) => ({
  wrap: css({ position: 'relative', width: '100%', height: '100%', overflow: 'hidden' }),
  img: css({ display: 'block', width: '100%', height: '100%', objectFit: 'contain' }),
  loading: css({ position: 'absolute', top: theme.spacing(1), left: theme.spacing(1), color: theme.colors.text.secondary, fontSize: theme.typography.bodySmall.fontSize }),
  badge: css({
    position: 'absolute',
    top: theme.spacing(1),
    left: '50%',
    transform: 'translateX(-50%)',
    padding: theme.spacing(0.5, 1),
    borderRadius: theme.shape.radius.default,
    background: theme.colors.background.secondary,
    color: theme.colors.text.secondary,
  }),
  error: css({ position: 'absolute', inset: 0, padding: theme.spacing(1), overflow: 'auto' }),
  toolbar: css({ position: 'absolute', top: theme.spacing(0.5), right: theme.spacing(0.5), background: theme.colors.background.primary, borderRadius: theme.shape.radius.default }),
  linkInput: css({ flex: 1, minWidth: 0 }),
  linkNote: css({ flexShrink: 0, color: theme.colors.text.secondary }),
  linkWarning: css({ color: theme.colors.warning.text }),
  link: css({
    position: 'absolute',
    left: theme.spacing(1),
    right: theme.spacing(1),
    bottom: theme.spacing(1),
    display: 'flex',
    gap: theme.spacing(1),
    alignItems: 'center',
    padding: theme.spacing(1),
    background: theme.colors.background.secondary,
    borderRadius: theme.shape.radius.default,
    fontSize: theme.typography.bodySmall.fontSize,
  }),
});
