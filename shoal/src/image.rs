//! `shoal image load|ls`: a node's image store from the command line, as
//! `ctr images import` and `crictl images` are on a containerd node. There
//! is no registry: images arrive as `docker save` or OCI-layout archives.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use shoal_agent::image::{list_rows, ImageStore, DEFAULT_AGENT_DATA_DIR};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Import the images of a `docker save` or OCI-layout archive (plain
    /// or gzip) into the node's image store.
    Load(LoadArgs),
    /// List the node's images (columns as `crictl images`).
    Ls(LsArgs),
    /// Build an image from Debian packages (a recipe, or a built-in name:
    /// nginx, nginx:1.25, postgres, postgres:15) and load it into the
    /// node's image store.
    Build(BuildArgs),
}

#[derive(Args)]
pub struct BuildArgs {
    /// A recipe file (`images/nginx.toml`) or a name a built-in recipe
    /// makes.
    recipe: String,
    /// Also write the image as a `docker save` archive here (for `shoal
    /// image load` on other nodes, or `docker load`).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Do not load it into the node's image store.
    #[arg(long)]
    no_load: bool,
    /// Where fetched packages and built archives are kept.
    #[arg(long, env = "SHOAL_IMAGE_CACHE")]
    cache: Option<PathBuf>,
    /// The node agent's data dir (images are kept in its `images/`).
    #[arg(long, env = "SHOAL_AGENT_DATA_DIR", default_value = DEFAULT_AGENT_DATA_DIR)]
    data_dir: PathBuf,
}

#[derive(Args)]
pub struct LoadArgs {
    /// The archive (`docker save -o`, `scripts/busybox-image.sh`, an OCI
    /// image layout as a tar).
    file: PathBuf,
    /// The node agent's data dir (images are kept in its `images/`).
    #[arg(long, env = "SHOAL_AGENT_DATA_DIR", default_value = DEFAULT_AGENT_DATA_DIR)]
    data_dir: PathBuf,
}

#[derive(Args)]
pub struct LsArgs {
    /// The node agent's data dir (images are kept in its `images/`).
    #[arg(long, env = "SHOAL_AGENT_DATA_DIR", default_value = DEFAULT_AGENT_DATA_DIR)]
    data_dir: PathBuf,
}

pub fn run(command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Load(args) => {
            let store = ImageStore::open(&args.data_dir).with_context(|| {
                format!("opening the image store in {}", args.data_dir.display())
            })?;
            for image in store.import(&args.file)? {
                if image.names.is_empty() {
                    println!("Loaded image ID: {}", image.id);
                }
                for name in &image.names {
                    println!("Loaded image: {name}");
                }
            }
        }
        ImageCommand::Build(args) => build(args)?,
        ImageCommand::Ls(args) => {
            let store = ImageStore::open(&args.data_dir).with_context(|| {
                format!("opening the image store in {}", args.data_dir.display())
            })?;
            print!("{}", table(&list_rows(&store.list()?)));
        }
    }
    Ok(())
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    use shoal_agent::image::debian::{default_cache, Builder, Catalog};
    let builder = Builder {
        cache: args.cache.clone().unwrap_or_else(default_cache),
        ..Builder::default()
    };
    let catalog = Catalog::builtin(builder.clone())?;
    let recipe = if std::path::Path::new(&args.recipe).exists() {
        PathBuf::from(&args.recipe)
    } else {
        catalog
            .recipe_for(&args.recipe)
            .map(PathBuf::from)
            .with_context(|| {
                let names: Vec<String> = catalog
                    .recipes()
                    .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                    .collect();
                format!(
                    "{:?} is neither a recipe file nor an image a built-in recipe makes ({})",
                    args.recipe,
                    names.join(", ")
                )
            })?
    };
    let began = std::time::Instant::now();
    let built = builder.build(&recipe)?;
    println!(
        "{} {} ({} packages) in {:.1}s: {}",
        if built.fresh { "Built" } else { "Found built" },
        built.tags.join(", "),
        built.packages,
        began.elapsed().as_secs_f64(),
        built.archive.display()
    );
    if let Some(out) = &args.output {
        std::fs::copy(&built.archive, out).with_context(|| format!("writing {}", out.display()))?;
        shoal_agent::image::debian::write_id_file(&built, out)?;
        println!("Wrote {}", out.display());
    }
    if !args.no_load {
        let store = ImageStore::open(&args.data_dir)
            .with_context(|| format!("opening the image store in {}", args.data_dir.display()))?;
        let image = shoal_agent::image::debian::load(&built, &store)?;
        for name in &image.names {
            println!("Loaded image: {name}");
        }
    }
    Ok(())
}

/// crictl's table: tabwriter with a minimum cell width of 20 and 3 spaces
/// of padding, no padding after the last column.
fn table(rows: &[[String; 4]]) -> String {
    let header = ["IMAGE", "TAG", "IMAGE ID", "SIZE"].map(String::from);
    let all: Vec<&[String; 4]> = std::iter::once(&header).chain(rows).collect();
    let widths: Vec<usize> = (0..3)
        .map(|c| {
            all.iter()
                .map(|r| r[c].chars().count() + 3)
                .max()
                .unwrap_or(0)
                .max(20)
        })
        .collect();
    let mut out = String::new();
    for row in all {
        for (c, width) in widths.iter().enumerate() {
            out.push_str(&format!("{:<width$}", row[c]));
        }
        out.push_str(&row[3]);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_as_crictl() {
        let rows = vec![[
            "docker.io/library/busybox".to_string(),
            "latest".to_string(),
            "8c811b4aec35f".to_string(),
            "1.36MB".to_string(),
        ]];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "IMAGE                       TAG                 IMAGE ID            SIZE"
        );
        assert_eq!(
            lines[1],
            "docker.io/library/busybox   latest              8c811b4aec35f       1.36MB"
        );
    }
}
