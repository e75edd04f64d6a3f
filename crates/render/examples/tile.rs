//! Renders one tile to a file: `cargo run --release -p fractile-render --example tile -- 3 2 3 fire out.png`.

use fractile_render::{MaxZoom, Style, TileId, render_tile};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [z, x, y, style, path] = args.as_slice() else {
        return Err("usage: tile Z X Y STYLE OUT.png".into());
    };
    let tile = TileId::new(z.parse()?, x.parse()?, y.parse()?, MaxZoom::LIMIT)?;
    let png = render_tile(tile, style.parse::<Style>()?, &|| false)?;
    std::fs::write(path, png)?;
    Ok(())
}
